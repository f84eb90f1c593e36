"""``evaluate.threats`` and ``gate.min_threat_accuracy``: optional, checked by the threat table,
each error naming its key; a params file without them runs no profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from iocane.base.config import ConfigError, config_from_dict, load_config
from iocane.base.errors import BAD_INPUT
from tests.helpers.cli_runs import run_cli_with_project_params
from tests.helpers.paths import PROJECT_ROOT

PROFILE = {
    "linf": 0.1,
    "l2": 0.5,
    "l0": 2,
    "patch": 2,
    "corruptions": [1, 3, 5],
    "spatial": {"rotate": 15, "translate": 1, "rotations": 7, "translations": 3},
}


def _with(params_document: dict, threats: object = None, thresholds: object = None) -> dict:
    if threats is not None:
        params_document["evaluate"]["threats"] = threats
    if thresholds is not None:
        params_document["gate"]["min_threat_accuracy"] = thresholds
    return params_document


def test_params_without_the_keys_run_no_profile(params_document: dict) -> None:
    params_document["evaluate"].pop("threats", None)
    params_document["gate"].pop("min_threat_accuracy", None)
    config = config_from_dict(params_document)
    assert config.evaluate.threats.profile() == {}
    assert config.gate.min_threat_accuracy.thresholds() == {}
    hash(config)  # the tree stays hashable


def test_a_full_profile_reads_back_in_table_order(params_document: dict) -> None:
    shuffled = dict(reversed(PROFILE.items()))
    config = config_from_dict(_with(params_document, shuffled, {"l0": 0.2, "spatial": 0.5}))
    assert config.evaluate.threats.profile() == PROFILE
    assert list(config.evaluate.threats.profile()) == list(PROFILE)
    assert config.gate.min_threat_accuracy.thresholds() == {"l0": 0.2, "spatial": 0.5}


def test_the_shipped_params_files_have_a_profile() -> None:
    default = load_config(PROJECT_ROOT / "params.yaml").evaluate.threats.profile()
    fashion = load_config(PROJECT_ROOT / "configs" / "fashion_mnist.yaml").evaluate.threats
    assert {"l0", "patch", "corruptions", "spatial"} <= set(default)
    assert fashion.profile()["l0"] > default["l0"]  # 28x28 images: budgets of their size
    assert fashion.profile()["spatial"]["translate"] > default["spatial"]["translate"]


@pytest.mark.parametrize(
    ("threats", "thresholds", "key", "words"),
    [
        ({"l1": 0.5}, None, "evaluate.threats.l1", "known keys in evaluate.threats: linf, l2"),
        ({"linf": 1.5}, None, "evaluate.threats.linf", "outside (0, 1]"),
        ({"l0": 2.5}, None, "evaluate.threats.l0", "expected an integer"),
        ({"patch": 0}, None, "evaluate.threats.patch", "at least 1"),
        ({"corruptions": [0, 1]}, None, "evaluate.threats.corruptions", "outside 1 to 5"),
        ({"corruptions": 3}, None, "evaluate.threats.corruptions", "expected a list"),
        ({"spatial": {"rotate": 30}}, None, "evaluate.threats.spatial.translate", "missing"),
        (
            {"spatial": {"rotate": 30, "translate": 1, "grid": 3}},
            None,
            "evaluate.threats.spatial.grid",
            "known keys in evaluate.threats.spatial: rotate, translate, rotations",
        ),
        ({"linf": 0.1}, {"l0": 0.2}, "gate.min_threat_accuracy.l0", "not a threat of"),
        ({"linf": 0.1}, {"linf": 1.2}, "gate.min_threat_accuracy.linf", "<= 1"),
        ({"linf": 0.1}, {"lx": 0.2}, "gate.min_threat_accuracy.lx", "unknown key"),
    ],
)
def test_bad_threat_params_name_the_key(
    params_document: dict, threats: dict, thresholds: dict | None, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_dict(_with(params_document, threats, thresholds))
    assert raised.value.key == key and key in str(raised.value)
    assert words in str(raised.value), str(raised.value)


def test_a_bad_threat_exits_2_naming_the_key_before_any_work(tmp_path: Path) -> None:
    """Through the CLI: the message, exit code 2, and no torch imported (the check is the
    threat table's torch-free half)."""
    result = run_cli_with_project_params(
        tmp_path, "run", "--set", "evaluate.threats.corruptions=[2, 7]"
    )
    assert result.returncode == BAD_INPUT, result.stderr
    assert result.stderr.splitlines() == [
        "error: evaluate.threats.corruptions: severity 7 is outside 1 to 5",
        "[]",
    ], result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]
