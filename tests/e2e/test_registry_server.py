"""A real MLflow tracking server: the flow, ``review`` and ``evaluate`` reach MLflow over HTTP only.

The server runs as a subprocess on loopback with a sqlite backend and proxied artifacts
(``--artifacts-destination``): clients see ``mlflow-artifacts:`` URIs and upload and download
through the server, never touching the artifact folder themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers.pipeline_params import (
    CONTRACT_VERSION_TAGS,
    TINY_OVERRIDES,
    run_iocane,
    write_tiny_params,
)
from tests.helpers.prefect_homes import seeded_home
from tests.helpers.servers import free_port, running_server

NAME = TINY_OVERRIDES["registry"]["model_name"]


def _without_mlflow_settings(environ: dict[str, str]) -> dict[str, str]:
    """The environment minus any MLFLOW_* the developer has set (tracking, registry, ...)."""
    return {key: value for key, value in environ.items() if not key.startswith("MLFLOW_")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path | str]]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    # The server's background job runner (huey) is for GenAI jobs: not needed here.
    env = {**_without_mlflow_settings(os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with running_server(command, env, root, f"{url}/health") as log_path:
        yield {"url": url, "root": root, "log": log_path}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("project")


@pytest.fixture(scope="module")
def env(project: Path, server: dict, prefect_home_template: Path) -> dict[str, str]:
    return {
        **_without_mlflow_settings(os.environ),
        "MLFLOW_TRACKING_URI": server["url"],
        "PREFECT_HOME": seeded_home(prefect_home_template, project / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(project / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The registry lock for a server URI lives in the user's cache: keep it in the test's.
        "XDG_CACHE_HOME": str(project / ".cache"),
    }


@pytest.fixture(scope="module")
def pipeline(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``iocane run`` once, against the server."""
    # Fewer evaluation images than the tiny default: the accuracy-vs-eps curves dominate the run.
    params = write_tiny_params(project / "params.yaml", evaluate={"n_samples": 60})
    completed = run_iocane(project, env, "run", "--params", str(params))
    (project / "run.log").write_text(completed.stderr)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def registration(pipeline: subprocess.CompletedProcess, project: Path) -> dict:
    return json.loads((project / "reports" / "registration.json").read_text())


@pytest.fixture
def client(server: dict) -> MlflowClient:
    return MlflowClient(tracking_uri=server["url"])


def _assert_nothing_local(project: Path) -> None:
    for local in ("mlflow.db", "mlruns", "mlartifacts"):
        assert not (project / local).exists(), f"{local} was created: MLflow was not the server"


def test_run_prints_only_its_result_on_stdout(
    pipeline: subprocess.CompletedProcess, registration: dict
) -> None:
    # Against a server, MLflow's client writes "View run ... at: http://..." links to stdout
    # when a run ends; they must not land in front of the result.
    try:
        result = json.loads(pipeline.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"iocane run's stdout is not just its JSON result:\n{pipeline.stdout[:600]}")
    assert (result["version"], result["alias"]) == (registration["version"], "champion")


def test_run_registers_the_champion_on_the_server(
    registration: dict, project: Path, server: dict, client: MlflowClient
) -> None:
    assert registration["gate"] == "passed" and registration["alias"] == "champion"
    _assert_nothing_local(project)

    version = client.get_model_version_by_alias(NAME, "champion")
    assert str(version.version) == registration["version"] == "1"
    assert version.run_id == registration["run_id"]
    tags = version.tags
    for key in CONTRACT_VERSION_TAGS:
        assert key in tags, key
    assert tags["gate"] == "passed" and tags["threat_model"] == "Linf"
    meta = json.loads((project / "data" / "prepared" / "meta.json").read_text())
    assert tags["data_fingerprint"] == meta["fingerprint"]
    evaluation = json.loads((project / "metrics" / "evaluate.json").read_text())
    assert float(tags["robust_accuracy"]) == pytest.approx(evaluation["robust_accuracy"], abs=1e-6)

    # Artifacts are proxied: the run only knows mlflow-artifacts: URIs, the server holds the files.
    run = client.get_run(version.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    artifacts = {item.path for item in client.list_artifacts(version.run_id)}
    assert {"metrics", "plots", "reports", "weights", "data"} <= artifacts
    stored = {path.name for path in (server["root"] / "artifacts").rglob("*") if path.is_file()}
    assert {"model.pt", "model.pt2", "robustness.md", "evaluate.json"} <= stored


def test_weights_and_pt2_model_load_through_the_server(
    registration: dict,
    project: Path,
    server: dict,
    client: MlflowClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    import torch
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from iocane.base.layout import Layout
    from iocane.data.prepared import load_prepared
    from iocane.model_files import load_model

    version = client.get_model_version_by_alias(NAME, "champion")
    weights = mlflow.artifacts.download_artifacts(
        run_id=version.run_id,
        artifact_path="weights/model.pt",
        dst_path=str(tmp_path / "weights"),
        tracking_uri=server["url"],
    )
    trained = project / "checkpoints" / "train" / "model.pt"
    assert Path(weights).read_bytes() == trained.read_bytes()
    model, spec = load_model(Path(weights))
    assert spec.name == "small_cnn"

    # models:/ URIs resolve through the global tracking URI: point it at the server for this test
    # only (monkeypatch restores both the module global and the environment variable).
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["url"])
    monkeypatch.setattr(tracking_utils, "_tracking_uri", server["url"])
    (tmp_path / "pt2").mkdir()
    exported = mlflow.pytorch.load_model(f"models:/{NAME}@champion", dst_path=str(tmp_path / "pt2"))

    images = load_prepared(Layout(project)).test.images[:8]
    with torch.no_grad():
        expected = model(images)
        actual = exported(images)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(actual.argmax(1), expected.argmax(1))


def test_review_and_evaluate_against_the_server(
    registration: dict, project: Path, env: dict[str, str], client: MlflowClient
) -> None:
    review = run_iocane(project, env, "review", "--name", NAME, "--json")
    assert review.returncode == 0, review.stderr[-2000:]
    rows = json.loads(review.stdout)["versions"]
    assert [(row["version"], row["gate"], row["aliases"]) for row in rows] == [
        (1, "passed", "champion")
    ]

    evaluated = run_iocane(
        project,
        env,
        "evaluate",
        "--model-uri",
        f"models:/{NAME}@champion",
        "--params",
        str(project / "params.yaml"),
        "--set",
        "evaluate.preset=quick",
        "--set",
        "evaluate.n_samples=40",
    )
    (project / "evaluate.log").write_text(evaluated.stderr)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads(evaluated.stdout)
    assert result["version"] == "1"
    assert result["robust_accuracy"] <= result["clean_accuracy"]

    version = client.get_model_version(NAME, "1")
    assert version.tags["reevaluated_robust_accuracy"] == f"{result['robust_accuracy']:.6f}"
    assert version.tags["reevaluated_preset"] == "quick"
    evaluations = client.list_artifacts(version.run_id, "evaluations")
    assert len(evaluations) == 1, f"expected one evaluations/<stamp> folder: {evaluations}"
    (evaluation,) = evaluations
    logged = {
        item.path.rsplit("/", 1)[-1]
        for item in client.list_artifacts(version.run_id, evaluation.path)
    }
    assert {"evaluate.json", "robustness.md", "robustness_curves.png"} <= logged
    _assert_nothing_local(project)
