"""``evaluate.certify`` and ``gate.min_certified_accuracy``: optional, each error naming its key;
a params file without them certifies nothing and checks no certified figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from iocane.base.config import ConfigError, config_from_dict, load_config
from iocane.base.errors import BAD_INPUT
from tests.helpers.paths import PROJECT_ROOT

SMOOTHING = {"sigma": 0.25, "n0": 100, "n": 1000, "alpha": 0.001, "radii": [0.25, 0.5]}


def test_params_without_the_keys_certify_nothing(params_document: dict) -> None:
    params_document["evaluate"].pop("certify", None)
    params_document["gate"].pop("min_certified_accuracy", None)
    config = config_from_dict(params_document)
    assert config.evaluate.certify is None
    assert config.gate.min_certified_accuracy is None
    hash(config)  # the tree stays hashable


def test_the_default_params_run_both_bounds_and_no_smoothing() -> None:
    certify = load_config(PROJECT_ROOT / "params.yaml").evaluate.certify
    assert certify is not None and certify.bounds == ("ibp", "crown")
    assert certify.smoothing is None and certify.runs()


def test_smoothing_and_a_gate_floor_read_back(params_document: dict) -> None:
    params_document["evaluate"]["certify"] = {"bounds": ["crown"], "smoothing": SMOOTHING}
    params_document["gate"]["min_certified_accuracy"] = 0.4
    config = config_from_dict(params_document)
    smoothing = config.evaluate.certify.smoothing
    assert (smoothing.sigma, smoothing.n0, smoothing.n) == (0.25, 100, 1000)
    assert smoothing.radii == (0.25, 0.5)
    assert config.evaluate.certify.bounds == ("crown",)
    assert config.gate.min_certified_accuracy == 0.4


def test_smoothing_alone_certifies_without_bounds(params_document: dict) -> None:
    params_document["evaluate"]["certify"] = {"smoothing": SMOOTHING}
    certify = config_from_dict(params_document).evaluate.certify
    assert certify.bounds == () and certify.runs()


SM = "evaluate.certify.smoothing"


def _smoothing(**change: object) -> dict:
    return {"smoothing": {**SMOOTHING, **change}}


@pytest.mark.parametrize(
    ("certify", "floor", "key", "words"),
    [
        ({"bounds": ["ibp", "milp"]}, None, "evaluate.certify.bounds[1]", "not one of"),
        ({"bounds": "ibp"}, None, "evaluate.certify.bounds", "expected a list"),
        ({"bounds": ["ibp", "ibp"]}, None, "evaluate.certify.bounds", "more than once"),
        ({"bound": ["ibp"]}, None, "evaluate.certify.bound", "known keys in evaluate.certify"),
        (_smoothing(sigma=0), None, f"{SM}.sigma", "> 0"),
        (_smoothing(n0=0), None, f"{SM}.n0", ">= 1"),
        (_smoothing(n=0), None, f"{SM}.n", ">= 1"),
        (_smoothing(alpha=1), None, f"{SM}.alpha", "(0, 1)"),
        (_smoothing(radii=[]), None, f"{SM}.radii", "at least one"),
        (_smoothing(radii=[0.5, -1]), None, f"{SM}.radii[1]", "> 0"),
        ({"smoothing": {"sigma": 0.25}}, None, f"{SM}.n0", "missing"),
        ({"bounds": ["ibp"]}, 1.5, "gate.min_certified_accuracy", "must be in [0, 1]"),
        ({"bounds": []}, 0.5, "gate.min_certified_accuracy", "needs evaluate.certify.bounds"),
        (None, 0.5, "gate.min_certified_accuracy", "needs evaluate.certify.bounds"),
    ],
)
def test_bad_certify_params_name_the_key(
    params_document: dict, certify: dict | None, floor: float | None, key: str, words: str
) -> None:
    params_document["evaluate"]["certify"] = certify
    params_document["gate"]["min_certified_accuracy"] = floor
    with pytest.raises(ConfigError) as raised:
        config_from_dict(params_document)
    assert raised.value.key == key and key in str(raised.value), str(raised.value)
    assert words in str(raised.value), str(raised.value)


def test_a_bad_certify_key_exits_2_naming_it_before_any_work(tmp_path: Path) -> None:
    """Through the CLI: exit code 2, the key in the message, torch never imported."""
    (tmp_path / "params.yaml").write_text((PROJECT_ROOT / "params.yaml").read_text())
    script = (
        "import sys; from iocane.cli import main; code = main(sys.argv[1:]); "
        "heavy = {'torch', 'prefect', 'mlflow'} & set(sys.modules); "
        "print(sorted(heavy), file=sys.stderr); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "run", "--set", "evaluate.certify.bounds=[ibp, exact]"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == BAD_INPUT, result.stderr
    assert result.stderr.splitlines() == [
        "error: evaluate.certify.bounds[1]: 'exact' is not one of 'ibp' or 'crown'",
        "[]",
    ], result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]
