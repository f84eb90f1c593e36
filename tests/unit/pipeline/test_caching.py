"""Cache keys follow params, inputs and code; a cached result is used only with its outputs;
the stage specs agree with dvc.yaml; retries are for transient errors only."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest
import requests
import yaml
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2

import iocane.pipeline.keys as caching
from iocane.config import ConfigError, load_config
from iocane.data.sources import DataError
from iocane.layout import Layout
from iocane.pipeline.keys import STAGES, outputs_current, record_outputs, stage_key
from iocane.pipeline.retries import is_transient
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.pipeline_params import write_tiny_params


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Layout]:
    """A project whose stage inputs and outputs exist as small files."""
    layout = Layout(tmp_path)
    for spec in STAGES.values():
        for name in (*spec.inputs, *spec.outputs):
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"content of {name}")
    return write_tiny_params(tmp_path / "params.yaml"), layout


def _keys(params: Path, layout: Layout, *overrides: str) -> dict[str, str]:
    config = load_config(params, list(overrides))
    return {stage: stage_key(stage, config, layout) for stage in STAGES}


def test_a_params_change_changes_the_keys_of_the_stages_that_read_it(project) -> None:
    params, layout = project
    before = _keys(params, layout)
    assert before == _keys(params, layout), "keys must be deterministic"
    eps = _keys(params, layout, "train.eps=0.05")
    assert {stage for stage in STAGES if eps[stage] != before[stage]} == {"train", "evaluate"}
    threshold = _keys(params, layout, "gate.min_robust_accuracy=0.5")
    assert {stage for stage in STAGES if threshold[stage] != before[stage]} == {"gate"}
    seed = _keys(params, layout, "seed=1")
    assert {stage for stage in STAGES if seed[stage] != before[stage]} == {
        "prepare",
        "warmup",
        "train",
        "evaluate",
    }


def test_a_new_input_file_changes_the_keys_of_the_stages_that_read_it(project) -> None:
    params, layout = project
    before = _keys(params, layout)
    (layout.root / "checkpoints/warmup/model.pt").write_text("other weights")
    after = _keys(params, layout)
    assert {stage for stage in STAGES if after[stage] != before[stage]} == {
        "train",
        "evaluate",
        "register",
    }


def test_a_code_change_changes_the_keys_of_the_stages_that_run_it(
    project, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    params, layout = project
    code = tmp_path_factory.mktemp("code")
    for package in ("iocane", "tasks", "models", "attacks"):
        shutil.copytree(PROJECT_ROOT / package, code / package)
    monkeypatch.setattr(caching, "CODE_ROOT", code)
    caching.code_version.cache_clear()
    before = _keys(params, layout)
    assert before == _keys(params, layout)
    with (code / "attacks" / "pgd.py").open("a") as source:
        source.write("\n# a change to the attack\n")
    caching.code_version.cache_clear()
    after = _keys(params, layout)
    assert {stage for stage in STAGES if after[stage] != before[stage]} == {"train", "evaluate"}
    caching.code_version.cache_clear()


def test_raw_data_in_a_directory_is_part_of_the_prepare_key(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"old")
    params = write_tiny_params(tmp_path / "params.yaml")
    layout = Layout(tmp_path / "project")
    config = load_config(params, ["data.dataset=fashion_mnist", f"data.root={raw}"])
    before = stage_key("prepare", config, layout)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"new data, another size")
    assert stage_key("prepare", config, layout) != before


def test_outputs_are_current_only_while_they_are_the_ones_the_key_produced(project) -> None:
    params, layout = project
    config = load_config(params)
    assert not outputs_current("train", config, layout), "no record yet"
    record_outputs("train", config, layout)
    assert outputs_current("train", config, layout)
    assert not outputs_current("train", load_config(params, ["train.eps=0.05"]), layout)
    (layout.root / "metrics/train.json").write_text('{"edited": true}')
    assert not outputs_current("train", config, layout)
    record_outputs("train", config, layout)
    (layout.root / "checkpoints/train/model.pt").unlink()
    assert not outputs_current("train", config, layout)


def test_stage_specs_agree_with_dvc_yaml() -> None:
    """One description of each stage: what Prefect's cache keys on is what DVC tracks."""
    declared = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    assert list(declared) == list(STAGES)
    for name, spec in STAGES.items():
        stage = declared[name]
        assert stage["params"] == list(spec.params), name
        deps = set(stage["deps"])
        assert set(spec.code) <= deps, name
        for path in spec.inputs:
            assert path in deps or str(Path(path).parent) in deps, (name, path)
        outs = {
            entry if isinstance(entry, str) else next(iter(entry))
            for key in ("outs", "metrics", "plots")
            for entry in stage.get(key, [])
        }
        for path in spec.outputs:
            assert path in outs or str(Path(path).parent) in outs, (name, path)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionResetError("reset by peer"), True),
        (requests.exceptions.ConnectionError("refused"), True),
        (MlflowException("API request to http://mlflow/api failed with exception boom"), True),
        (MlflowException("busy", error_code=databricks_pb2.TEMPORARILY_UNAVAILABLE), True),
        (MlflowException("no model", error_code=databricks_pb2.RESOURCE_DOES_NOT_EXIST), False),
        (DataError("fashion_mnist: IDX file truncated"), False),
        (ConfigError("train.eps must be positive"), False),
        (RuntimeError("loss is nan"), False),
    ],
)
def test_only_transient_errors_are_retried(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_a_download_failure_is_transient_through_its_cause() -> None:
    try:
        try:
            raise urllib.error.URLError("temporary failure in name resolution")
        except urllib.error.URLError as cause:
            raise DataError("fashion_mnist: torchvision could not download") from cause
    except DataError as error:
        assert is_transient(error)
    try:
        try:
            raise urllib.error.URLError("unreachable")
        except urllib.error.URLError:
            raise DataError("a message that hides its cause") from None
    except DataError as error:
        assert not is_transient(error)
