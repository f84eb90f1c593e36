"""``iocane run`` against the team's services as ``deploy/dev-services`` starts them: an MLflow
server on PostgreSQL with proxied artifacts, and a Prefect server on PostgreSQL.

The servers are the session's (the ``services`` fixture, tests/helpers/services.py): this file
keeps to its own registered model and project directory. What the run leaves is checked where it
lives: the versions and flow runs in the PostgreSQL databases, the files in the artifact store
the MLflow server proxies, nothing in the project.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg2
import pytest
from mlflow import MlflowClient

from tests.helpers.pipeline_params import CONTRACT_VERSION_TAGS, run_iocane, write_tiny_params
from tests.helpers.servers import harden_runs_of
from tests.helpers.services import user_environment

NAME = "iocane-services-e2e"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("project")


@pytest.fixture(scope="module")
def env(project: Path, services: dict[str, str]) -> dict[str, str]:
    return user_environment(project, services)


@pytest.fixture(scope="module")
def pipeline(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    params = write_tiny_params(
        project / "params.yaml", evaluate={"n_samples": 60}, registry={"model_name": NAME}
    )
    completed = run_iocane(project, env, "run", "--params", str(params))
    (project / "run.log").write_text(completed.stderr)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def _query(services: dict[str, str], database: str, sql: str, *args: object) -> list[tuple]:
    connection = psycopg2.connect(f"{services['postgres_url']}/{database}")
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall()
    finally:
        connection.close()


def test_run_registers_in_postgres_with_proxied_artifacts(
    pipeline: subprocess.CompletedProcess, project: Path, services: dict[str, str]
) -> None:
    result = json.loads(pipeline.stdout)
    assert (result["gate"], result["alias"], result["version"]) == ("passed", "champion", "1")
    for local in ("mlflow.db", "mlruns", "mlartifacts"):
        assert not (project / local).exists(), f"{local} was created: MLflow was not the server"

    client = MlflowClient(tracking_uri=services["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias(NAME, "champion")
    for key in CONTRACT_VERSION_TAGS:
        assert key in version.tags, key
    # The version is a row in the MLflow database on PostgreSQL, the alias too.
    rows = _query(
        services, "mlflow", "SELECT version, run_id FROM model_versions WHERE name = %s", NAME
    )
    assert rows == [(1, version.run_id)]
    aliases = _query(
        services,
        "mlflow",
        "SELECT alias, version FROM registered_model_aliases WHERE name = %s",
        NAME,
    )
    assert aliases == [("champion", 1)]

    # Proxied artifacts: the run knows only mlflow-artifacts: URIs; the files are in the
    # server's artifact store, and come back through the server byte for byte.
    run = client.get_run(version.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    store = Path(services["state"]) / "mlflow-artifacts"
    stored = {path.name for path in store.rglob("*") if path.is_file()}
    assert {"model.pt", "model.pt2", "robustness.md", "evaluate.json"} <= stored
    downloaded = client.download_artifacts(
        version.run_id, "weights/model.pt", str(project / "down")
    )
    assert (
        Path(downloaded).read_bytes()
        == (project / "checkpoints" / "train" / "model.pt").read_bytes()
    )


def test_flow_run_is_in_the_postgres_backed_prefect_server(
    pipeline: subprocess.CompletedProcess, project: Path, services: dict[str, str]
) -> None:
    ours = harden_runs_of(services["PREFECT_API_URL"], project)
    assert len(ours) == 1, ours
    (flow_run,) = ours
    assert flow_run["state"]["type"] == "COMPLETED"
    rows = _query(
        services, "prefect", "SELECT state_type FROM flow_run WHERE id = %s", flow_run["id"]
    )
    assert rows == [("COMPLETED",)]
    tasks = _query(
        services, "prefect", "SELECT count(*) FROM task_run WHERE flow_run_id = %s", flow_run["id"]
    )
    assert tasks[0][0] > 0
