"""train.lr by where training starts: null in params.yaml takes the measured default for a start
from model.weights, the old default from scratch, and a number given anywhere (params.yaml, an
overlay, --set) wins."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from iocane.base.config import ConfigError, load_config
from iocane.base.config_schema import params_json_schema
from iocane.base.layout import Layout
from tests.helpers.paths import PROJECT_ROOT

PARAMS = PROJECT_ROOT / "params.yaml"
FROM_WEIGHTS = ["model.weights=mine.pt", "warmup.epochs=0"]
NOTE = "train.lr 0.01: the default for a start from model.weights (benchmarks/own_model.py)"


def test_the_shipped_params_leave_the_lr_to_the_start() -> None:
    assert yaml.safe_load(PARAMS.read_text())["train"]["lr"] is None


def test_from_scratch_the_lr_is_what_it_was() -> None:
    config = load_config(PARAMS)
    assert config.train.lr == 0.05 and isinstance(config.train.lr, float)
    assert config.train.eps_ramp_epochs == 2
    assert config.start_defaults == ()


def test_from_weights_the_measured_lr_applies_and_says_so() -> None:
    config = load_config(PARAMS, FROM_WEIGHTS)
    assert config.train.lr == 0.01
    assert config.train.eps_ramp_epochs == 2  # measured best from weights too: unchanged
    assert config.start_defaults == (NOTE,)
    # an overlay that sets model.weights counts the same
    assert load_config(PARAMS, ["model.weights=mine.pth"]).train.lr == 0.01


def test_a_value_given_with_set_wins() -> None:
    config = load_config(PARAMS, [*FROM_WEIGHTS, "train.lr=0.05"])
    assert config.train.lr == 0.05
    assert config.start_defaults == ()


def test_a_value_in_an_overlay_or_the_params_file_wins(tmp_path: Path) -> None:
    overlay = tmp_path / "mine.yaml"
    overlay.write_text(f"extends: {PARAMS}\nmodel:\n  weights: mine.pt\ntrain:\n  lr: 0.03\n")
    assert load_config(overlay).train.lr == 0.03
    document = yaml.safe_load(PARAMS.read_text())
    document["train"]["lr"] = 0.2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(document))
    config = load_config(tmp_path / "params.yaml", FROM_WEIGHTS)
    assert (config.train.lr, config.start_defaults) == (0.2, ())


def test_a_missing_or_bad_lr_is_still_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_config(PARAMS, ["train.lr=-1"])
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_config(PARAMS, ["train.lr=fast"])
    document = yaml.safe_load(PARAMS.read_text())
    del document["train"]["lr"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_config(tmp_path / "params.yaml")


def test_the_schema_accepts_null_and_names_both_values() -> None:
    lr = params_json_schema()["$defs"]["TrainConfig"]["properties"]["lr"]
    assert {"type": "null"} in lr["anyOf"]
    assert "0.05 from scratch, 0.01 from model.weights" in lr["description"]


def test_the_train_stage_logs_the_default_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tasks.train

    monkeypatch.setattr(tasks.train, "train_in_process", lambda *args: None)
    monkeypatch.setattr(tasks.train, "sha256_file", lambda path: "0")
    with caplog.at_level(logging.INFO, logger="iocane"):
        tasks.train.run_train(load_config(PARAMS, FROM_WEIGHTS), Layout(Path("unused")))
    assert [r.getMessage() for r in caplog.records if "model.weights" in r.getMessage()] == [NOTE]
