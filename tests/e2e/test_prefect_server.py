"""A real Prefect server on loopback: ``iocane serve`` and ``prefect deploy`` against it.

``iocane serve`` must create the ``harden`` deployment with its cron schedule, the server must
schedule runs from it, and a run of that deployment must execute in the serving process and
register a model. ``prefect deploy --all`` must create the deployments of prefect.yaml on a
process work pool.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.pipeline_params import write_tiny_params
from tests.helpers.prefect_homes import seeded_home
from tests.helpers.servers import free_port, prefect_api, running_server, stop_process_group

CRON = "0 3 * * 1"  # Mondays 03:00, the README's weekly re-hardening


@pytest.fixture(scope="module")
def prefect_server(
    tmp_path_factory: pytest.TempPathFactory, prefect_home_template: Path
) -> Iterator[dict[str, str]]:
    """``prefect server start`` with its own home and database; yields the client environment."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    server_env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")},
        "PREFECT_HOME": seeded_home(prefect_home_template, home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    command = [
        str(Path(sys.executable).with_name("prefect")),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    api = f"http://127.0.0.1:{port}/api"
    with running_server(command, server_env, home, f"{api}/health"):
        yield {**server_env, "PREFECT_API_URL": api}


def _api(env: dict[str, str], path: str, body: dict | None = None) -> Any:
    return prefect_api(env["PREFECT_API_URL"], path, body)


def _wait_for(condition, seconds: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OSError:  # not there yet (404) or the server is busy
            value = None
        if value:
            return value
        time.sleep(2)
    pytest.fail(
        f"no {what} after {seconds:.0f}s" + (f":\n{log.read_text()[-3000:]}" if log else "")
    )


def _flow_runs(env: dict[str, str], deployment_id: str, state_types: list[str]) -> list[dict]:
    criteria = {
        "deployment_id": {"any_": [deployment_id]},
        "state": {"type": {"any_": state_types}},
    }
    return _api(env, "/flow_runs/filter", {"flow_runs": criteria, "limit": 20})


def test_serve_deploys_on_a_cron_schedule_and_runs_the_flow(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    write_tiny_params(tmp_path / "params.yaml")
    env = {
        **prefect_server,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / ".prefect" / "storage"),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        serving = subprocess.Popen(
            [sys.executable, "-m", "iocane.cli", "serve", "--cron", CRON],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deployment = _wait_for(
            lambda: _api(env, "/deployments/name/harden/harden-scheduled"), 120, "deployment", log
        )
        (schedule,) = deployment["schedules"]
        assert schedule["schedule"]["cron"] == CRON and schedule["active"]
        assert deployment["parameters"]["params_path"] == str(tmp_path / "params.yaml")
        assert deployment["parameters"]["project_root"] == str(tmp_path)

        # The server's scheduler turns the cron into runs: Mondays at 03:00.
        scheduled = _wait_for(
            lambda: _flow_runs(env, deployment["id"], ["SCHEDULED"]), 120, "scheduled run"
        )
        for run in scheduled:
            start = dt.datetime.fromisoformat(run["expected_start_time"].replace("Z", "+00:00"))
            assert (start.weekday(), start.hour, start.minute) == (0, 3, 0)

        # A run of the deployment now, as `prefect deployment run` makes one: the serving
        # process picks it up and runs the flow.
        run = _api(env, f"/deployments/{deployment['id']}/create_flow_run", {})
        finished = _wait_for(
            lambda: (
                (state := _api(env, f"/flow_runs/{run['id']}")["state"])["type"]
                in ("COMPLETED", "FAILED", "CRASHED")
                and state
            ),
            300,
            "finished flow run",
            log,
        )
        assert finished["type"] == "COMPLETED", f"{finished}\n{log.read_text()[-3000:]}"
    finally:
        stop_process_group(serving)
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("iocane-test", "champion")
    assert champion.tags["gate"] == "passed"


def test_prefect_deploy_creates_the_deployments_of_prefect_yaml(
    prefect_server: dict[str, str],
) -> None:
    prefect = str(Path(sys.executable).with_name("prefect"))
    for command in (
        [prefect, "work-pool", "create", "iocane", "--type", "process"],
        [prefect, "--no-prompt", "deploy", "--all"],
    ):
        completed = subprocess.run(
            command, cwd=PROJECT_ROOT, env=prefect_server, capture_output=True, text=True
        )
        assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    expected = {"harden/harden-weekly": CRON, "reharden/reharden-on-new-data": "0 * * * *"}
    for name, cron in expected.items():
        deployment = _api(prefect_server, f"/deployments/name/{name}")
        assert deployment["work_pool_name"] == "iocane"
        assert [item["schedule"]["cron"] for item in deployment["schedules"]] == [cron]
        assert deployment["parameters"]["params_path"] == "params.yaml"
        # The worker runs the flow in the project the deployment was made from.
        (step,) = deployment["pull_steps"]
        directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
        assert Path(directory) == PROJECT_ROOT
