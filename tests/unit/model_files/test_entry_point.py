"""The model-files area's one entry point: every public name resolves from ``iocane.model_files``,
URIs are read without torch, and a ``.safetensors`` file round-trips or is refused by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import iocane.model_files as model_files
from iocane.base.config import load_config
from iocane.base.errors import ModelSourceError
from iocane.model_files import (
    load_model,
    open_model,
    read_state_dict,
    save_model,
    save_state_dict,
)
from models import ModelSpec, build_model
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.pipeline_params import write_tiny_params

DATA_SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=8)


@pytest.fixture(scope="module")
def model_config(tmp_path_factory: pytest.TempPathFactory):
    """The params' ``model`` section for ``small_cnn`` at width 8 (the spec above)."""
    root = tmp_path_factory.mktemp("params")
    params = write_tiny_params(root / "params.yaml")
    return load_config(params, ["model.name=small_cnn", "model.width=8"]).model


def _trained_like(seed: int) -> torch.nn.Module:
    """A model whose every weight differs from a fresh build's (seeded, not all default)."""
    torch.manual_seed(seed)
    model = build_model(DATA_SPEC)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    return model.eval()


def test_every_public_name_has_one_home() -> None:
    assert sorted(model_files.__all__) == sorted(model_files._HOMES)
    for name in model_files.__all__:
        assert getattr(model_files, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'load_from_elsewhere'"):
        model_files.load_from_elsewhere  # noqa: B018


def test_reading_a_uri_imports_neither_torch_nor_mlflow() -> None:
    """The stage cache key resolves ``model.weights`` URIs: that must not load torch."""
    code = (
        "import sys\n"
        "from iocane.model_files import is_model_uri\n"
        "assert is_model_uri('models:/mine@champion') and not is_model_uri('mine.pt')\n"
        "print(sorted({'torch', 'mlflow'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_state_dict_round_trips(tmp_path: Path, suffix: str) -> None:
    network = _trained_like(7).get_submodule("net")
    path = tmp_path / f"net{suffix}"
    save_state_dict(path, network)
    read = read_state_dict(path)
    assert read.keys() == network.state_dict().keys()
    for name, tensor in network.state_dict().items():
        assert torch.equal(read[name], tensor), name


def test_iocane_evaluate_loads_a_safetensors_file_exactly(tmp_path: Path, model_config) -> None:
    """``--model-file net.safetensors``: the same weights, in iocane's wrapped network."""
    model = _trained_like(11)
    save_state_dict(tmp_path / "net.safetensors", model.get_submodule("net"))
    save_model(tmp_path / "model.pt", model, DATA_SPEC)
    loaded = open_model(
        "net.safetensors", root=tmp_path, device="cpu", data_spec=DATA_SPEC, config=model_config
    )
    assert (loaded.kind, loaded.source) == ("state_dict", "net.safetensors")
    by_iocane_file = load_model(tmp_path / "model.pt")[0].state_dict()
    assert loaded.model.state_dict().keys() == by_iocane_file.keys()
    for name, tensor in by_iocane_file.items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_a_corrupt_safetensors_file_is_refused_by_name(tmp_path: Path, model_config) -> None:
    path = tmp_path / "net.safetensors"
    save_state_dict(path, _trained_like(3).get_submodule("net"))
    path.write_bytes(path.read_bytes()[:-40])  # cut short, as an interrupted copy leaves it
    with pytest.raises(ModelSourceError, match=r"net\.safetensors is not a \.safetensors file"):
        read_state_dict(path)
    with pytest.raises(
        ModelSourceError, match=rf"^model file {path} is not a \.safetensors file that loads: "
    ):
        open_model(
            "net.safetensors", root=tmp_path, device="cpu", data_spec=DATA_SPEC, config=model_config
        )
    path.write_bytes(b"not a safetensors header")
    with pytest.raises(ModelSourceError, match=rf"model.weights: {path} is not a \.safetensors"):
        read_state_dict(path)


def test_a_versions_two_model_files_are_found_where_they_were_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hardened and the natural iocane file, logged into a run and read back from it."""
    import mlflow

    from iocane.model_files import (
        IOCANE_MODEL_ARTIFACT,
        NATURAL_MODEL_ARTIFACT,
        log_version_model_files,
        version_model_file,
    )

    files = {}
    for stage, seed in (("train", 1), ("warmup", 2)):
        files[stage] = tmp_path / "checkpoints" / stage / "model.pt"
        save_model(files[stage], _trained_like(seed), DATA_SPEC)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking)
    try:
        experiment = mlflow.create_experiment("files", artifact_location=str(tmp_path / "art"))
        with mlflow.start_run(experiment_id=experiment) as run:
            log_version_model_files(files["train"], files["warmup"])
    finally:
        mlflow.set_tracking_uri(previous)
    # The project's store: mlflow.db in the project directory (no MLFLOW_TRACKING_URI).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hardened = version_model_file(run.info.run_id, tmp_path)
    natural = version_model_file(run.info.run_id, tmp_path, NATURAL_MODEL_ARTIFACT)
    logged = {item.path for item in mlflow.MlflowClient(tracking).list_artifacts(run.info.run_id)}
    natural_folder = NATURAL_MODEL_ARTIFACT.rpartition("/")[0]
    assert {IOCANE_MODEL_ARTIFACT, natural_folder} <= {
        item.path
        for folder in logged
        for item in mlflow.MlflowClient(tracking).list_artifacts(run.info.run_id, folder)
    }
    assert hardened.read_bytes() == files["train"].read_bytes()
    assert natural.read_bytes() == files["warmup"].read_bytes()
