"""Cache keys follow params, inputs and code as dvc.yaml declares them (one list of each stage's
deps); retries are for transient errors only."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2

import iocane.pipeline.keys as caching
from iocane.base.config import ConfigError, load_config
from iocane.base.layout import Layout
from iocane.data.sources import DataError
from iocane.pipeline.keys import evidence_key, stage_code_version, stage_key, stage_specs
from iocane.pipeline.retries import is_transient
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.pipeline_params import write_tiny_params

STAGES = tuple(stage_specs())


def write_stage_files(root: Path) -> None:
    """Small files at every input and output of every stage: a directory dep or output gets
    the file its stage writes there and a per-epoch checkpoint (not part of what it produced)."""
    for spec in stage_specs().values():
        for name in (*spec.inputs, *spec.outputs):
            path = root / name
            files = [path] if path.suffix else [path / "model.pt", path / "epoch-0001.pt"]
            for file in files:
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(f"content of {file.relative_to(root)}")


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Layout]:
    """A project whose stage inputs and outputs exist as small files."""
    write_stage_files(tmp_path)
    return write_tiny_params(tmp_path / "params.yaml"), Layout(tmp_path)


@pytest.fixture
def code_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the code and its dvc.yaml, standing in for CODE_ROOT."""
    code = tmp_path_factory.mktemp("code")
    for package in ("iocane", "tasks", "models", "attacks"):
        shutil.copytree(PROJECT_ROOT / package, code / package)
    shutil.copy2(PROJECT_ROOT / "dvc.yaml", code / "dvc.yaml")
    monkeypatch.setattr(caching, "CODE_ROOT", code)
    caching.code_version.cache_clear()
    yield code
    caching.code_version.cache_clear()


def _keys(params: Path, layout: Layout, *overrides: str) -> dict[str, str]:
    config = load_config(params, list(overrides))
    return {stage: stage_key(stage, config, layout) for stage in STAGES}


def test_a_params_change_changes_the_keys_of_the_stages_that_read_it(project) -> None:
    params, layout = project
    before = _keys(params, layout)
    assert before == _keys(params, layout), "keys must be deterministic"
    # register lists every section but sweep (its MLflow run logs every key)
    eps = _keys(params, layout, "train.eps=0.05")
    assert {stage for stage in STAGES if eps[stage] != before[stage]} == {
        "train",
        "evaluate",
        "register",
    }
    threshold = _keys(params, layout, "gate.min_robust_accuracy=0.5")
    assert {stage for stage in STAGES if threshold[stage] != before[stage]} == {"gate", "register"}
    seed = _keys(params, layout, "seed=1")
    assert {stage for stage in STAGES if seed[stage] != before[stage]} == {
        "prepare",
        "warmup",
        "train",
        "evaluate",
        "register",
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


def test_a_checkpoint_of_an_epoch_is_not_an_input(project) -> None:
    params, layout = project
    before = _keys(params, layout)
    (layout.root / "checkpoints/warmup/epoch-0001.pt").write_text("resume state of another run")
    (layout.root / "checkpoints/warmup/partial.pt").write_text("stopped within an epoch")
    assert _keys(params, layout) == before


def test_a_code_change_changes_the_keys_of_the_stages_that_run_it(project, code_root) -> None:
    params, layout = project
    before = _keys(params, layout)
    assert before == _keys(params, layout)
    training = stage_code_version("train")
    with (code_root / "attacks" / "pgd.py").open("a") as source:
        source.write("\n# a change to the attack\n")
    caching.code_version.cache_clear()
    after = _keys(params, layout)
    assert {stage for stage in STAGES if after[stage] != before[stage]} == {"train", "evaluate"}
    assert stage_code_version("train") != training


def test_the_keys_read_each_stages_deps_and_params_from_dvc_yaml(project, code_root) -> None:
    """dvc.yaml is the one list: a param or a dep added there is in the key, nowhere else."""
    params, layout = project
    before = _keys(params, layout)
    threshold = _keys(params, layout, "gate.min_robust_accuracy=0.5")
    assert _keys(params, layout, "train.eps=0.05")["gate"] == before["gate"]
    dvc_file = code_root / "dvc.yaml"
    text = dvc_file.read_text()
    dvc_file.write_text(
        text.replace(
            "    params:\n      - gate\n    metrics:",
            "    params:\n      - gate\n      - train.eps\n    metrics:",
        ).replace("      - tasks/gate.py\n", "      - tasks/gate.py\n      - notes/gate.txt\n")
    )
    assert stage_specs()["gate"].params[-1] == "train.eps"
    assert "notes/gate.txt" in stage_specs()["gate"].inputs
    assert _keys(params, layout, "train.eps=0.05")["gate"] != _keys(params, layout)["gate"]
    now = _keys(params, layout)["gate"]
    (layout.root / "notes").mkdir()
    (layout.root / "notes/gate.txt").write_text("a new input of the gate")
    assert _keys(params, layout)["gate"] != now
    assert threshold["gate"] != before["gate"]


def test_the_evidence_key_follows_data_params_code_and_weights_not_wall_times(
    project, code_root
) -> None:
    """A retrained copy of a registered model (same data, params, code and weights) has the
    same evidence, though its metrics files record other wall times."""
    params, layout = project
    layout.prepared_meta.write_text('{"fingerprint": "abc"}')
    config = load_config(params)
    key = evidence_key(config, layout)
    layout.metrics_file("train").write_text('{"seconds": 12.5}')
    layout.metrics_file("evaluate").write_text('{"seconds": 3.0}')
    assert evidence_key(config, layout) == key
    assert evidence_key(load_config(params, ["gate.min_robust_accuracy=0.5"]), layout) != key
    weights = layout.model_file("train").read_bytes()
    layout.model_file("train").write_bytes(b"other weights")
    assert evidence_key(config, layout) != key
    layout.model_file("train").write_bytes(weights)
    assert evidence_key(config, layout) == key
    layout.prepared_meta.write_text('{"fingerprint": "def"}')
    assert evidence_key(config, layout) != key
    layout.prepared_meta.write_text('{"fingerprint": "abc"}')
    with (code_root / "attacks" / "pgd.py").open("a") as source:
        source.write("\n# a change to the attack\n")
    caching.code_version.cache_clear()
    assert evidence_key(config, layout) != key


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


def test_a_new_weights_file_at_the_same_path_changes_the_warmup_key(tmp_path: Path) -> None:
    params = write_tiny_params(tmp_path / "params.yaml")
    layout = Layout(tmp_path)
    (tmp_path / "base.pt").write_bytes(b"the first weights")
    config = load_config(params, ["model.weights=base.pt", "warmup.epochs=0"])
    before = {stage: stage_key(stage, config, layout) for stage in STAGES}
    (tmp_path / "base.pt").write_bytes(b"retrained weights")
    after = {stage: stage_key(stage, config, layout) for stage in STAGES}
    assert [stage for stage in STAGES if before[stage] != after[stage]] == ["warmup"]


def test_an_edited_model_factory_changes_the_warmup_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the user's module lives in the project directory
    module = tmp_path / "keyed_factory_model.py"
    module.write_text("def build(channels, image_size, num_classes): ...\n")
    params = write_tiny_params(tmp_path / "params.yaml")
    config = load_config(params, ["model.name=keyed_factory_model:build"])
    layout = Layout(tmp_path)
    before = stage_key("warmup", config, layout)
    assert stage_key("warmup", config, layout) == before
    module.write_text("def build(channels, image_size, num_classes): return None  # edited\n")
    assert stage_key("warmup", config, layout) != before


def test_the_raw_data_dep_of_dvc_yaml_is_the_param_it_names() -> None:
    """dvc.yaml's prepare depends on ``${data.root}`` (DVC reads params.yaml); the stage cache
    takes that path from the config instead of the literal text."""
    text = (PROJECT_ROOT / "dvc.yaml").read_text()
    assert "- ${data.root}" in text
    assert not any("${" in dep for spec in stage_specs().values() for dep in spec.inputs)


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
