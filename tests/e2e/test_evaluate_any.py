"""End to end: a model iocane did not train. The test trains a small classifier itself, logs it
with ``mlflow.pytorch.log_model`` and registers it, exports it with ``torch.export`` and saves its
state_dict; then ``iocane evaluate`` judges it from each of them (no natural model unless a
baseline is given), and the warmup starts from it (``model.weights: models:/...``).

The commands run in this process (``iocane.cli.main``, ``iocane.stages.main``): the same code
as the console script, without a process start per case.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient
from sklearn.datasets import load_digits
from torch import nn

from iocane.base.config import load_config
from iocane.base.errors import BAD_INPUT
from iocane.base.layout import Layout
from iocane.cli import main
from iocane.model_files import load_model, state_digest
from iocane.pipeline.keys import stage_key
from iocane.stages import main as stage_main
from tests.helpers import user_models
from tests.helpers.pipeline_params import write_tiny_params

EVALUATE = {"n_samples": 40, "preset": "quick"}


@dataclass(frozen=True)
class Project:
    root: Path
    tracking_uri: str
    run_id: str
    network: nn.Module  # what the test trained and logged
    images: torch.Tensor  # digits in [0, 1]


def _trained_network(num_classes: int, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    """The user's own classifier, trained a few steps on [0, 1] images (no normalisation)."""
    torch.manual_seed(0)
    network = user_models.tiny_net(channels=1, image_size=8, num_classes=num_classes)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.02)
    for _ in range(40):
        loss = nn.functional.cross_entropy(network(images), labels % num_classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return network.eval()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("own-model")
    shutil.copy(user_models.__file__, root / "user_models.py")
    write_tiny_params(root / "params.yaml", data={"limit_train": 300}, evaluate=EVALUATE)
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target)
    network = _trained_network(10, images, labels)
    five = _trained_network(5, images, labels)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # MLflow's fluent API logs to the global tracking URI, which it also exports as
    # MLFLOW_TRACKING_URI: put both back, or every later test in this worker (and the
    # commands they start) would use this project's registry.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        experiment = MlflowClient(uri).create_experiment(
            "mine", artifact_location=str(root / "art")
        )
        example = images[:2].numpy()
        with mlflow.start_run(experiment_id=experiment) as run:
            # pip_requirements given: inferring them loads the model in a subprocess (seconds)
            mlflow.pytorch.log_model(
                network,
                name="model",
                input_example=example,
                registered_model_name="mine",
                pip_requirements=["torch"],
            )
            # pickled (no torch.export: quicker), as older MLflow versions logged every model
            mlflow.pytorch.log_model(
                five, name="five", serialization_format="pickle", pip_requirements=["torch"]
            )
            # A model of another flavour: only its MLmodel file matters to iocane.
            sklearn_model = root / "sk" / "MLmodel"
            sklearn_model.parent.mkdir()
            sklearn_model.write_text(yaml.safe_dump({"flavors": {"sklearn": {}}}))
            mlflow.log_artifacts(str(sklearn_model.parent), "sk")
    finally:
        mlflow.set_tracking_uri(previous)
    torch.save(network.state_dict(), root / "mine.pt")
    batch = torch.export.Dim("batch")
    exported = torch.export.export(network, (images[:2],), dynamic_shapes=({0: batch},))
    torch.export.save(exported, root / "mine.pt2")
    return Project(root, uri, run.info.run_id, network, images)


@pytest.fixture
def at(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """In the project directory, with its registry."""
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.tracking_uri)
    return project


def _evaluate(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["evaluate", *args]) == 0, capsys.readouterr().err[-3000:]
    return json.loads(capsys.readouterr().out)


def test_a_registered_mlflow_model_evaluated_without_a_natural_model(
    at: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(at.root / "data", ignore_errors=True)  # the command prepares the params' data
    printed = _evaluate(capsys, "--model-uri", "models:/mine/1")
    assert printed["model"] == "models:/mine/1" and printed["version"] == "1"
    assert printed["natural"] is None and "transfer" not in printed["attacks"]
    assert 0 <= printed["robust_accuracy"] <= printed["clean_accuracy"] <= 1
    assert Layout(at.root).prepared_meta.exists()

    out = Layout(at.root / "reports" / "evaluations" / "mine-v1")
    report = out.report_file.read_text()
    assert "| evaluated |" in report and "natural" not in report
    assert set(json.loads(out.curves_file.read_text())["Linf"]) == {"eps", "hardened"}
    card = out.model_card_file.read_text()
    assert "Evaluated as given" in card and "models:/mine/1 (mine version 1" in card
    client = MlflowClient(at.tracking_uri)
    tags = client.get_model_version("mine", "1").tags
    assert tags["reevaluated_robust_accuracy"] == f"{printed['robust_accuracy']:.6f}"
    (logged,) = client.list_artifacts(at.run_id, "evaluations")
    names = {Path(item.path).name for item in client.list_artifacts(at.run_id, logged.path)}
    assert {"evaluate.json", "robustness.md", "model_card.md"} <= names


def test_a_run_uri_is_evaluated_and_logged_back_to_its_run(
    at: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = _evaluate(capsys, "--model-uri", f"runs:/{at.run_id}/model")
    assert printed["version"] is None and printed["run_id"] == at.run_id
    assert printed["natural"] is None
    run = MlflowClient(at.tracking_uri).get_run(at.run_id)
    assert run.data.tags["reevaluated_robust_accuracy"] == f"{printed['robust_accuracy']:.6f}"


def test_files_evaluated_beside_a_baseline_write_nothing_to_the_registry(
    at: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A torch.export program, beside the same network as a state_dict built by model.name:
    the same figures, and the registry is left as it was."""
    client = MlflowClient(at.tracking_uri)
    before = _registry_state(client)
    printed = _evaluate(
        capsys,
        "--model-file",
        "mine.pt2",
        "--baseline-file",
        "mine.pt",
        *("--set", "model.name=user_models:tiny_net"),
        *("--set", "model.mean=[0.0]", "--set", "model.std=[1.0]"),
    )
    assert printed["model"] == "mine.pt2" and printed["version"] is None
    assert printed["natural"]["clean_accuracy"] == printed["clean_accuracy"]
    out = Layout(at.root / "reports" / "evaluations" / "mine")
    assert "| baseline |" in out.report_file.read_text()
    assert "Baseline: `mine.pt (sha256" in out.model_card_file.read_text()
    assert _registry_state(client) == before


def _registry_state(client: MlflowClient) -> tuple:
    """The runs with their tags, and the versions with theirs."""
    experiment = client.get_experiment_by_name("mine").experiment_id
    runs = [(run.info.run_id, run.data.tags) for run in client.search_runs([experiment])]
    versions = [(v.version, v.tags) for v in client.search_model_versions("name='mine'")]
    return runs, versions


def _warmup_params(root: Path, weights: str) -> Path:
    return write_tiny_params(
        root / "params-warmup.yaml",
        data={"limit_train": 300},
        # The user's network takes [0, 1] images: iocane's normalisation is the identity.
        model={"name": "user_models:tiny_net", "weights": weights, "mean": [0.0], "std": [1.0]},
        warmup={"epochs": 0},
        evaluate=EVALUATE,
    )


def test_the_warmup_starts_from_a_model_uri(at: Project) -> None:
    params = _warmup_params(at.root, "models:/mine/1")
    assert stage_main(["prepare", "--params", str(params)]) == 0
    assert stage_main(["warmup", "--params", str(params)]) == 0
    layout = Layout(at.root)
    warmup = json.loads(layout.metrics_file("warmup").read_text())
    assert warmup["base_model"] == {
        "uri": "models:/mine/1",
        "name": "mine",
        "version": "1",
        "run_id": at.run_id,
        "state_sha256": state_digest(at.network.state_dict()),
    }
    natural, _ = load_model(layout.model_file("warmup"))
    with torch.no_grad():  # the natural baseline is the user's model
        assert torch.equal(natural(at.images).argmax(1), at.network(at.images).argmax(1))


def test_the_warmup_key_follows_an_alias_to_another_version(at: Project) -> None:
    client = MlflowClient(at.tracking_uri)
    client.set_registered_model_alias("mine", "prod", "1")
    config = load_config(_warmup_params(at.root, "models:/mine@prod"))
    first = stage_key("warmup", config, Layout(at.root))
    assert stage_key("warmup", config, Layout(at.root)) == first
    second = client.create_model_version("mine", f"runs:/{at.run_id}/model", run_id=at.run_id)
    client.set_registered_model_alias("mine", "prod", second.version)
    assert stage_key("warmup", config, Layout(at.root)) != first


def test_a_head_of_another_class_count_exits_2_naming_both(
    at: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"runs:/{at.run_id}/five"
    params = _warmup_params(at.root, uri)
    assert stage_main(["prepare", "--params", str(params)]) == 0
    capsys.readouterr()
    assert stage_main(["warmup", "--params", str(params)]) == BAD_INPUT
    message = capsys.readouterr().err
    assert uri in message and "5 classes" in message and "has 10" in message
    assert "model.reset_head" in message


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--model-uri", "runs:/{run}/nothere"), "no MLflow model there"),
        (("--model-uri", "runs:/{run}/sk"), "is an MLflow sklearn model, not a PyTorch one"),
        (("--model-file", "junk.pt2"), "not a torch.export program"),
        (("--model-uri", "models:/mine/1", "--model-file", "mine.pt"), "exactly one"),
    ],
    ids=["no artifact at that path", "not PyTorch", "a .pt2 that does not load", "both"],
)
def test_bad_sources_exit_2_naming_them(
    at: Project, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], named: str
) -> None:
    (at.root / "junk.pt2").write_bytes(b"not a zip archive")
    args = tuple(arg.format(run=at.run_id) for arg in args)
    client = MlflowClient(at.tracking_uri)
    before = _registry_state(client)
    capsys.readouterr()
    assert main(["evaluate", *args]) == BAD_INPUT
    (message,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert named in message and (args[1] in message or "exactly one" in named), message
    assert _registry_state(client) == before


def test_data_prepared_elsewhere_is_kept_when_it_is_the_same(at: Project) -> None:
    """data/prepared made without the stage store (as `dvc repro` makes it): the same data is
    left byte for byte (DVC's record stays valid); data of other params is replaced."""
    from iocane.cli.evaluation import prepared_for
    from iocane.data.prepared import load_prepared, prepare_data
    from iocane.pipeline.keys import stage_key as key_of
    from iocane.pipeline.store import outputs_current

    root = at.root / "elsewhere"
    root.mkdir()
    params = write_tiny_params(root / "params.yaml", data={"limit_train": 300})
    layout = Layout(root)
    prepare_data(load_config(params), layout)

    def arrays() -> dict[str, bytes]:
        return {name: path.read_bytes() for name, path in layout.prepared_arrays.items()}

    before = arrays()
    fingerprint = json.loads(layout.prepared_meta.read_text())["fingerprint"]
    prepared_for(load_config(params), layout)
    assert arrays() == before
    assert outputs_current("prepare", key_of("prepare", load_config(params), layout), layout)
    other = load_config(params, ["data.limit_train=200"])
    prepared_for(other, layout)
    assert json.loads(layout.prepared_meta.read_text())["fingerprint"] != fingerprint
    assert load_prepared(layout).meta["counts"]["train"] < 300  # the replaced data loads
    assert outputs_current("prepare", key_of("prepare", other, layout), layout)
