"""Bad input through the real commands: each is refused with exit code 2, a one-line message
that names the problem (the params key, the file, the URI), no traceback, and nothing in the
registry."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from iocane.base.config import load_config
from iocane.base.errors import BAD_INPUT
from iocane.base.layout import Layout
from iocane.data.prepared import prepare_data
from iocane.model_files import save_model
from models import ModelSpec, build_model
from tests.helpers.dataset_files import make_idx_data, write_idx
from tests.helpers.image_folder import truncate, write_folder, write_image
from tests.helpers.pipeline_params import write_tiny_params

pytestmark = [pytest.mark.bad_input]


def _command(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=project,
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
            "PREFECT_HOME": str(project / ".prefect"),
            "IOCANE_DATA_CACHE": str(project / "cache"),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )


def _assert_refused(result: subprocess.CompletedProcess, project: Path, *named: str) -> None:
    assert result.returncode == BAD_INPUT, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # One line says what is wrong (Prefect may log after it, stopping its temporary server).
    (message,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    for thing in named:
        assert thing in message, message
    registry = project / "mlflow.db"
    if registry.exists():
        with sqlite3.connect(registry) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
            if "model_versions" in tables:
                assert db.execute("select count(*) from model_versions").fetchone() == (0,)
            if "registered_model_aliases" in tables:
                count = db.execute("select count(*) from registered_model_aliases").fetchone()
                assert count == (0,)


@pytest.fixture
def project(tmp_path: Path, record_property: Callable[[str, object], None]) -> Path:
    record_property("bad_inputs", 1)
    write_tiny_params(tmp_path / "params.yaml")
    return tmp_path


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow registry holding the model ``iocane-test`` with no versions, made once (its
    schema migrations take seconds) and copied into each test that needs one."""
    path = tmp_path_factory.mktemp("registry") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").create_registered_model("iocane-test")
    return path


def _with_registry(project: Path, template: Path) -> MlflowClient:
    shutil.copy(template, project / "mlflow.db")
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


# --- params ---------------------------------------------------------------------------------

PARAMS = {
    "unknown key": (["train.epoch=3"], "train.epoch"),
    "wrong type": (["train.eps=abc"], "train.eps"),
    "out of range": (["train.eps=-0.1"], "train.eps"),
    "not finite": (["train.lr=.inf"], "train.lr"),
    "contradictory: ramp longer than training": (
        ["train.eps_ramp_epochs=99"],
        "train.eps_ramp_epochs",
    ),
    "contradictory: a dataset without its files": (["data.dataset=mnist"], "data.root"),
    "not a section": (["trian.eps=0.1"], "trian"),
    "no processes": (["train.nproc=0"], "train.nproc"),
    "model.name not source:builder": (["model.name=torchvision:"], "model.name"),
    # These two pass the params check; the model-source check refuses them before any work
    # (models/sources.py check_source), where they once waited for the warmup to build them.
    "model.name: no such torchvision builder": (["model.name=torchvision:nosuch"], "model.name"),
    "model.name: no such module": (["model.name=no_such_module_xyz:build"], "model.name"),
}


@pytest.mark.parametrize(("overrides", "named"), PARAMS.values(), ids=PARAMS.keys())
def test_bad_params(project: Path, overrides: list[str], named: str) -> None:
    args = [arg for override in overrides for arg in ("--set", override)]
    _assert_refused(_command(project, "iocane.cli", "run", *args), project, named)
    # Refused before any work: no data prepared, no registry, no Prefect state.
    assert not any(path.exists() for path in Layout(project).prepared_arrays.values())
    assert not (project / "mlflow.db").exists() and not (project / ".prefect").exists()


def test_params_file_that_is_not_yaml(project: Path) -> None:
    (project / "broken.yaml").write_text("train: [eps: 0.1\n")
    result = _command(project, "iocane.cli", "run", "--params", "broken.yaml")
    _assert_refused(result, project, "broken.yaml")


def test_user_weights_for_other_classes(project: Path) -> None:
    """A state_dict whose head has 5 classes, for data with 10: both numbers are named. The
    architecture is a file in the project directory, as a user's would be (the command's process
    has no ``tests`` package on its path)."""
    from tests.helpers import user_models

    shutil.copy(user_models.__file__, project / "user_models.py")
    weights = user_models.tiny_net(channels=1, image_size=8, num_classes=5).state_dict()
    torch.save(weights, project / "w.pt")
    overrides = ["model.name=user_models:tiny_net", "model.weights=w.pt"]
    args = [arg for override in overrides for arg in ("--set", override)]
    result = _command(project, "iocane.cli", "run", *args)
    _assert_refused(result, project, "model.weights", "5 classes", "has 10")


# --- data -----------------------------------------------------------------------------------


def _fashion(project: Path, damage: Callable[[Path], Path | None]) -> tuple[Path, Path | None]:
    """Fashion-MNIST files in the Debian layout, damaged by ``damage`` (returns the file)."""
    root = project / "fashion"
    write_idx(root, make_idx_data(seed=3, n_train=40, n_test=20), compress=True)
    damaged = damage(root)
    write_tiny_params(project / "params.yaml", data={"dataset": "fashion_mnist", "root": str(root)})
    return root, damaged


def _truncate(root: Path) -> Path:
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:300])
    return path


def _bad_magic(root: Path) -> Path:
    path = root / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + raw[4:]))
    return path


def _rewrite(root: Path, name: str, array: np.ndarray) -> Path:
    data = make_idx_data(seed=3, n_train=40, n_test=20)
    data[name] = array
    write_idx(root, data, compress=True)
    return root / f"{name}.gz"


DATA = {
    "truncated gzip": (_truncate, "truncated or corrupt"),
    "corrupt IDX header": (_bad_magic, "not an IDX label file"),
    "wrong image shape": (
        lambda root: _rewrite(root, "train-images-idx3-ubyte", np.zeros((40, 32, 32), np.uint8)),
        "expected (N, 1, 28, 28)",
    ),
    "labels out of range": (
        lambda root: _rewrite(root, "t10k-labels-idx1-ubyte", np.full(20, 11, np.uint8)),
        "outside [0, 10)",
    ),
    "empty split": (
        lambda root: _rewrite(root, "t10k-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8)),
        "the split is empty",
    ),
}


@pytest.mark.parametrize(("damage", "named"), DATA.values(), ids=DATA.keys())
def test_bad_data_in_the_prepare_stage(
    project: Path, damage: Callable[[Path], Path | None], named: str
) -> None:
    _fashion(project, damage)
    result = _command(project, "iocane.stages", "prepare")
    _assert_refused(result, project, named)
    assert not any(path.exists() for path in Layout(project).prepared_arrays.values())


def test_missing_data_directory(project: Path) -> None:
    missing = project / "nowhere"
    write_tiny_params(
        project / "params.yaml", data={"dataset": "fashion_mnist", "root": str(missing)}
    )
    result = _command(project, "iocane.cli", "run")
    _assert_refused(result, project, str(missing), "data.root")


def test_bad_data_in_a_whole_run(project: Path) -> None:
    """The flow path too: the error crosses Prefect unchanged, the attempt's run is FAILED."""
    _, damaged = _fashion(project, _truncate)
    _assert_refused(_command(project, "iocane.cli", "run"), project, str(damaged))
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("iocane-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert "truncated or corrupt" in run.data.tags["iocane.outcome"]


# --- the user's image folder (data.dataset: folder) ------------------------------------------


def _folder_params(project: Path, root: Path) -> None:
    write_tiny_params(
        project / "params.yaml", data={"dataset": "folder", "root": str(root), "limit_train": 0}
    )


def test_image_folder_that_does_not_exist(project: Path) -> None:
    missing = project / "no_images"
    _folder_params(project, missing)
    _assert_refused(_command(project, "iocane.cli", "run"), project, str(missing), "data.root")


def test_image_folder_with_an_empty_class(project: Path) -> None:
    root = write_folder(project / "images", classes=("cat", "dog", "owl"))
    for path in (root / "owl").iterdir():
        path.unlink()
    _folder_params(project, root)
    _assert_refused(_command(project, "iocane.cli", "run"), project, str(root / "owl"))


def test_truncated_image_in_the_folder(project: Path) -> None:
    root = write_folder(project / "images", per_class=10)
    broken = truncate(root / "cat" / "004.png")
    _folder_params(project, root)
    result = _command(project, "iocane.stages", "prepare")
    _assert_refused(result, project, str(broken), "data.on_bad_image")
    assert not any(path.exists() for path in Layout(project).prepared_arrays.values())


def _single_class(root: Path) -> tuple[Path, tuple[str, ...]]:
    write_folder(root, classes=("cat",))
    return root, (str(root), "single class")


def _split_classes_differ(root: Path) -> tuple[Path, tuple[str, ...]]:
    write_folder(root / "train", classes=("cat", "dog"))
    write_folder(root / "test", classes=("cat", "owl"))
    return root, (str(root / "test"), "dog, owl")


def _images_smaller_than_the_size(root: Path) -> tuple[Path, tuple[str, ...]]:
    write_folder(root, size=(16, 16))
    write_image(root / "dog" / "tiny.png", np.zeros((8, 8, 3), np.uint8))
    return root, (str(root / "dog" / "tiny.png"), "data.image_size 12", "data.on_small_image")


FOLDERS = {
    "a single class": _single_class,
    "train/ and test/ with different classes": _split_classes_differ,
    "an image smaller than data.image_size": _images_smaller_than_the_size,
}


@pytest.mark.parametrize("make", FOLDERS.values(), ids=FOLDERS.keys())
def test_image_folder_that_cannot_be_prepared(project: Path, make) -> None:
    root, named = make(project / "images")
    write_tiny_params(
        project / "params.yaml",
        # fail: a smaller image is refused, not scaled up as by default
        data={
            "dataset": "folder",
            "root": str(root),
            "limit_train": 0,
            "image_size": 12,
            "on_small_image": "fail",
        },
    )
    _assert_refused(_command(project, "iocane.stages", "prepare"), project, *named)
    assert not Layout(project).prepared_dir.exists()


# --- model URIs -----------------------------------------------------------------------------

URIS = {
    "unknown name": ("models:/nope@champion", "models:/nope@champion"),
    "unknown version": ("models:/iocane-test/99", "models:/iocane-test/99"),
    "unknown alias": ("models:/iocane-test@gold", "models:/iocane-test@gold"),
    "not a model URI": ("s3://bucket/model", "models:/NAME@ALIAS"),
    "unknown run": ("runs:/abc/model", "runs:/abc/model"),
}


@pytest.mark.parametrize(("uri", "named"), URIS.values(), ids=URIS.keys())
def test_bad_model_uri(project: Path, registry_template: Path, uri: str, named: str) -> None:
    _with_registry(project, registry_template)
    result = _command(project, "iocane.cli", "evaluate", "--model-uri", uri)
    _assert_refused(result, project, named)


def test_evaluate_a_model_file_that_does_not_exist(project: Path) -> None:
    result = _command(project, "iocane.cli", "evaluate", "--model-file", "mine.pt2")
    _assert_refused(result, project, "mine.pt2")
    assert not (project / "reports").exists()


def test_weights_from_a_model_uri_that_names_nothing(
    project: Path, registry_template: Path
) -> None:
    """model.weights: models:/... is resolved when the warmup starts from it."""
    _with_registry(project, registry_template)
    write_tiny_params(project / "params.yaml", model={"weights": "models:/iocane-test/3"})
    layout = _prepared(project)
    result = _command(project, "iocane.stages", "warmup")
    _assert_refused(result, project, "models:/iocane-test/3")
    assert not layout.model_file("warmup").exists()


def test_promote_an_unknown_version(project: Path, registry_template: Path) -> None:
    _with_registry(project, registry_template)
    args = ("promote", "--name", "iocane-test", "--version", "7")
    result = _command(project, "iocane.cli", *args)
    _assert_refused(result, project, "models:/iocane-test/7")


# --- model files ----------------------------------------------------------------------------


def _prepared(project: Path) -> Layout:
    """Prepared data, made in this process: only the stage under test needs its own."""
    layout = Layout(project)
    prepare_data(load_config(project / "params.yaml"), layout)
    return layout


def test_a_natural_model_of_another_architecture(project: Path) -> None:
    """The file says small_cnn; its weights are a madry_cnn's."""
    layout = _prepared(project)
    claimed = ModelSpec("small_cnn", 1, 8, 10, (0.5,), (0.5,))
    actual = build_model(ModelSpec("madry_cnn", 1, 8, 10, (0.5,), (0.5,)))
    path = layout.model_file("warmup")
    path.parent.mkdir(parents=True)
    torch.save({"spec": claimed.to_dict(), "state_dict": actual.state_dict()}, path)
    result = _command(project, "iocane.stages", "train")
    _assert_refused(result, project, str(path), "does not fit architecture small_cnn")
    assert not layout.model_file("train").exists()


def test_weights_in_a_truncated_safetensors_file(project: Path) -> None:
    """A ``.safetensors`` cut short (an interrupted copy): exit 2 naming the key and the file."""
    from safetensors.torch import save_file

    spec = ModelSpec("small_cnn", 1, 8, 10, (0.5,), (0.5,))
    state = build_model(spec).get_submodule("net").state_dict()
    weights = project / "w.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, weights)
    weights.write_bytes(weights.read_bytes()[:-64])
    write_tiny_params(project / "params.yaml", model={"weights": "w.safetensors"})
    layout = _prepared(project)
    result = _command(project, "iocane.stages", "warmup")
    _assert_refused(result, project, "model.weights", "w.safetensors", "file that loads")
    assert not layout.model_file("warmup").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_model_file_that_carries_code(project: Path) -> None:
    layout = _prepared(project)
    path = layout.model_file("warmup")
    path.parent.mkdir(parents=True)
    spec = ModelSpec("small_cnn", 1, 8, 10, (0.5,), (0.5,))
    save_model(path, build_model(spec), spec)
    path.write_bytes(pickle.dumps({"spec": spec.to_dict(), "state_dict": _Payload()}))
    result = _command(project, "iocane.stages", "train")
    _assert_refused(result, project, str(path), "cannot be loaded safely")
    assert not (project / "PWNED").exists(), "the payload did not run"


def test_an_output_directory_outside_the_project(project: Path, registry_template: Path) -> None:
    client = _with_registry(project, registry_template)
    client.create_model_version("iocane-test", source="models/fake")
    outside = project.parent / f"{project.name}-outside"
    result = _command(
        project,
        "iocane.cli",
        "evaluate",
        "--model-uri",
        "models:/iocane-test/1",
        "--out",
        f"../{outside.name}",
    )
    assert result.returncode == BAD_INPUT, result.stderr
    assert "--out" in result.stderr and "outside the project" in result.stderr
    assert not outside.exists()
