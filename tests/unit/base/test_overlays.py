"""Params overlays: a file under configs/ holds only what differs from the file it extends."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from iocane.base.config import ConfigError, config_from_dict, load_config
from iocane.base.overlays import read_params
from tests.helpers.paths import PROJECT_ROOT

FASHION = PROJECT_ROOT / "configs" / "fashion_mnist.yaml"
# What issue 19 changed on purpose, from the measurements of benchmarks/budget.py: the network,
# the warmup and the recipe (ten minutes of PGD-5 with Adam). Everything else stands.
ISSUE_19_RECIPE = {
    "model": {"name": "compact_cnn", "width": 8},
    "warmup": {"epochs": 1, "lr": 0.01},
    "train": {
        "method": "pgd",
        "budget_minutes": 10,
        "epochs": 6,
        "optimizer": "adam",
        "lr": 0.001,
        "steps": 5,
        "step_size": 0.05,
    },
}

# Issue 31 added the threat profile, with budgets of 28x28 images.
ISSUE_31_PROFILE = {
    "evaluate": {
        "threats": {
            "linf": 0.1,
            "l0": 12,
            "patch": 5,
            "corruptions": [1, 3, 5],
            "spatial": {"rotate": 30, "translate": 3},
        }
    }
}


# Issue 32 added the certified band, at params.yaml's default.
ISSUE_32_CERTIFY = {"evaluate": {"certify": {"bounds": ["ibp", "crown"], "smoothing": None}}}


def test_fashion_mnist_overlay_is_the_complete_file_it_replaced() -> None:
    """configs/fashion_mnist.yaml repeated every key of params.yaml until it became an overlay:
    merged with params.yaml, it must give the same params as that complete file did, with
    issue 19's recipe in place of the old one."""
    before = yaml.safe_load(
        (Path(__file__).parent / "fashion_mnist_before_overlay.yaml").read_text()
    )
    changes = (*ISSUE_19_RECIPE.items(), *ISSUE_31_PROFILE.items(), *ISSUE_32_CERTIFY.items())
    for section, values in changes:
        before[section].update(values)
    assert load_config(FASHION).to_dict() == config_from_dict(before).to_dict()


def test_the_shipped_overlays_hold_only_what_differs() -> None:
    for path in sorted((PROJECT_ROOT / "configs").glob("*.yaml")):
        overlay = yaml.safe_load(path.read_text())
        extends = overlay.pop("extends")
        # params.yaml, or another shipped overlay (fashion_mnist_certified.yaml extends one)
        assert extends == "../params.yaml" or "/" not in extends, path.name
        base, _ = read_params(path.parent / extends)  # what it extends, merged
        for section, values in overlay.items():
            same = [key for key, value in values.items() if base[section].get(key) == value]
            assert not same, f"{path.name}: {section}.{same} repeat params.yaml"


def _write(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def base(tmp_path: Path, params_document: dict) -> Path:
    return _write(tmp_path / "params.yaml", params_document)


def test_overlay_wins_mappings_merge_and_lists_replace(tmp_path: Path, base: Path) -> None:
    _write(
        tmp_path / "base2.yaml",
        {"extends": "params.yaml", "evaluate": {"extra_attacks": ["eot_pgd", "bpda_pgd"]}},
    )
    overlay = _write(
        tmp_path / "configs" / "mine.yaml",
        {
            "extends": "../base2.yaml",  # a chain: relative to each file
            "train": {"eps": 0.2},
            "evaluate": {"extra_attacks": ["eot_pgd"]},
        },
    )
    config = load_config(overlay, ["seed=4"])
    assert config.train.eps == pytest.approx(0.2)
    assert config.train.steps == load_config(base).train.steps  # the rest of train is kept
    assert config.evaluate.extra_attacks == ("eot_pgd",)  # a list is replaced, not appended
    assert config.seed == 4  # --set applies after the merge


def test_an_error_in_an_overlay_names_the_file_and_the_key(tmp_path: Path, base: Path) -> None:
    overlay = _write(tmp_path / "mine.yaml", {"extends": "params.yaml", "train": {"eps": "abc"}})
    with pytest.raises(ConfigError, match=r"mine\.yaml: train\.eps: expected a number"):
        load_config(overlay)
    unknown = _write(tmp_path / "typo.yaml", {"extends": "params.yaml", "train": {"epsilon": 1}})
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown key train\.epsilon"):
        load_config(unknown)


def test_an_error_from_the_base_names_the_base(tmp_path: Path, params_document: dict) -> None:
    params_document["train"]["steps"] = 0
    _write(tmp_path / "params.yaml", params_document)
    overlay = _write(tmp_path / "mine.yaml", {"extends": "params.yaml", "seed": 1})
    with pytest.raises(ConfigError, match=r"params\.yaml: train\.steps: must be >= 1"):
        load_config(overlay)


def test_a_merged_document_is_validated_as_a_whole(tmp_path: Path, base: Path) -> None:
    """Each file may be fine alone; the rule between keys holds for the merged result."""
    overlay = _write(tmp_path / "mine.yaml", {"extends": "params.yaml", "train": {"epochs": 1}})
    with pytest.raises(ConfigError, match=r"train\.eps_ramp_epochs: must be in \[0, train"):
        load_config(overlay)


@pytest.mark.parametrize(
    ("extends", "message"),
    [
        ("absent.yaml", "extends: params file not found"),
        ("mine.yaml", "a circle"),
        (3, "expected a params file's path"),
    ],
)
def test_a_bad_extends_is_refused(tmp_path: Path, base: Path, extends: object, message: str):
    overlay = _write(tmp_path / "mine.yaml", {"extends": extends, "seed": 1})
    with pytest.raises(ConfigError, match=message):
        load_config(overlay)


def test_extends_is_not_a_params_key(params_document: dict) -> None:
    params_document["extends"] = "params.yaml"
    with pytest.raises(ConfigError, match="unknown key extends"):
        config_from_dict(params_document)
