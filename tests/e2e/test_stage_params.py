"""What each stage reads while it runs is what dvc.yaml declares for it: every params key the
stage function reads (a field, or a section dumped whole) is in its ``params:`` or in
``NOT_STAGE_PARAMS``. A key read and not declared would let a cached stage return the result of
other params (issue 29: ``train.optimizer`` once was such a key)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from iocane.base.config import load_config
from iocane.base.layout import Layout
from iocane.pipeline.keys import NOT_STAGE_PARAMS, stage_specs
from tasks.evaluate import run_evaluate
from tasks.gate import run_gate
from tasks.prepare import run_prepare
from tasks.register import run_register
from tasks.train import run_train
from tasks.warmup import run_warmup
from tests.helpers.param_reads import recorded_reads
from tests.helpers.pipeline_params import write_tiny_params

STAGE_FUNCTIONS: dict[str, Callable] = {
    "prepare": run_prepare,
    "warmup": run_warmup,
    "train": run_train,
    "evaluate": run_evaluate,
    "gate": run_gate,
    "register": run_register,
}


def _covered(key: str, entries: tuple[str, ...]) -> bool:
    return any(key == entry or key.startswith(f"{entry}.") for entry in entries)


def test_the_stage_functions_are_the_stages_of_dvc_yaml() -> None:
    assert list(STAGE_FUNCTIONS) == list(stage_specs())


def test_every_stage_reads_only_the_params_dvc_yaml_declares_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = write_tiny_params(
        tmp_path / "params.yaml",
        data={"limit_train": 300},
        warmup={"epochs": 1},
        # a time budget: the calibration and the plan read params too
        train={"epochs": 2, "budget_minutes": 0.05},
        evaluate={"n_samples": 40},
    )
    config, layout = load_config(params), Layout(tmp_path)
    undeclared = {}
    for stage, function in STAGE_FUNCTIONS.items():
        with recorded_reads() as reads:
            function(config, layout)
        assert reads, f"{stage} read no params: the recorder is not recording"
        declared = stage_specs()[stage].params
        extra = sorted(
            key
            for key in reads
            if not _covered(key, declared) and not _covered(key, tuple(NOT_STAGE_PARAMS))
        )
        if extra:
            undeclared[stage] = extra
    assert undeclared == {}, f"read but not in the stage's params in dvc.yaml: {undeclared}"
