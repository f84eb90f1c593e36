"""A Prefect work pool and a worker run the ``harden`` deployment of prefect.yaml on its schedule,
against the session's PostgreSQL-backed Prefect server (the ``services`` fixture), registering
into the session's MLflow server: the team set-up of docs/pipeline/prefect.md, end to end.

The project directory stands for a teammate's clone: its own params.yaml (tiny digits, its own
registered model, because the servers are shared), the repository's prefect.yaml and its flows.
``prefect deploy`` adds an every-minute cron to the weekly one of prefect.yaml, so that the
server's scheduler makes a run within a minute rather than on Monday; the run is the scheduler's
(``auto_scheduled``), not one the test asks for. Once the worker holds it, the deployment is
paused, so the next minute makes no second run. Then the worker is stopped, and no process it
started may remain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow import MlflowClient

from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.pipeline_params import CONTRACT_VERSION_TAGS, write_tiny_params
from tests.helpers.servers import prefect_api, stop_process_group
from tests.helpers.services import user_environment

NAME = "iocane-workers-e2e"  # the registered model
POOL = "iocane-workers-e2e"  # the work pool, apart from any other test's
WEEKLY = "0 3 * * 1"  # prefect.yaml's schedule for harden-weekly
EVERY_MINUTE = "* * * * *"
PREFECT = str(Path(sys.executable).with_name("prefect"))
FINISHED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
GRACE_SECONDS = 90  # SIGTERM, then SIGKILL: systemd's default stop timeout
# The worker takes a run this long before its start time and starts its process, which waits
# for that time (Prefect's WaitForScheduledTime) with its imports done: the minute's wait hides
# the start-up. Under the cron's minute, so that the next run can never be taken with it.
PREFETCH_SECONDS = 45


def _api(env: dict[str, str], path: str, body: dict | None = None) -> Any:
    return prefect_api(env["PREFECT_API_URL"], path, body)


def _runs(env: dict[str, str], deployment_id: str) -> list[dict]:
    criteria = {"deployment_id": {"any_": [deployment_id]}}
    return _api(env, "/flow_runs/filter", {"flow_runs": criteria, "limit": 200})


def _wait_for(condition: Callable[[], object], seconds: float, what: str, log: Path) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # the server is busy: ask again
            if value := condition():
                return value
        time.sleep(2)
    pytest.fail(f"no {what} after {seconds:.0f}s; the worker's log:\n{log.read_text()[-4000:]}")


def _prefect(project: Path, env: dict[str, str], *args: str) -> None:
    completed = subprocess.run(
        [PREFECT, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]


class Worker:
    """``prefect worker start`` in its own session; remembers every process seen under it."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        self.log = project / "worker.log"
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [PREFECT, "worker", "start", "--pool", POOL],
                cwd=project,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.seen: dict[int, psutil.Process] = {}
        self.killed = False  # the grace period ran out: stopped with SIGKILL

    def look(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)

    def stop(self) -> float:
        """SIGTERM to the worker alone, then SIGKILL after a grace period, as a service manager
        stops it (systemd's TimeoutStopSec); seconds until it exited. On a loaded CI machine
        the worker once took over a minute to exit on SIGTERM: what matters is that nothing
        it started outlives it, which ``left_behind`` checks either way."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.process.kill()
            self.process.wait(timeout=30)
        return time.monotonic() - began

    def left_behind(self) -> list[str]:
        """What still runs of the processes seen under the worker, or in its process group."""
        group = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if os.getpgid(process.pid) == self.process.pid:
                    group.append(process)
        alive = []
        for process in {**self.seen, **{process.pid: process for process in group}}.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{process.pid}: {' '.join(process.cmdline())}")
        return alive


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A teammate's clone, as far as the worker is concerned: params, prefect.yaml, flows."""
    write_tiny_params(
        tmp_path / "params.yaml", evaluate={"n_samples": 60}, registry={"model_name": NAME}
    )
    shutil.copyfile(PROJECT_ROOT / "prefect.yaml", tmp_path / "prefect.yaml")
    (tmp_path / "flows").symlink_to(PROJECT_ROOT / "flows", target_is_directory=True)
    return tmp_path


@pytest.fixture
def env(project: Path, services: dict[str, str]) -> dict[str, str]:
    # PYTHONPATH: the flow run imports iocane and tasks from this checkout, as a clone's would.
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return user_environment(
        project,
        services,
        PYTHONPATH=path,
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_WORKER_PREFETCH_SECONDS=str(PREFETCH_SECONDS),
    )


@pytest.fixture
def worker(project: Path, env: dict[str, str]) -> Iterator[Worker]:
    running = Worker(project, env)
    try:
        yield running
    finally:
        stop_process_group(running.process)


def test_a_worker_runs_the_scheduled_harden_deployment(
    project: Path, env: dict[str, str], services: dict[str, str], request: pytest.FixtureRequest
) -> None:
    began = time.monotonic()
    _prefect(project, env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    _prefect(
        project,
        env,
        *("--no-prompt", "deploy", "--name", "harden-weekly", "--pool", POOL),
        *("--cron", EVERY_MINUTE),
    )
    deployment = _api(env, "/deployments/name/harden/harden-weekly")
    assert deployment["work_pool_name"] == POOL
    crons = sorted(item["schedule"]["cron"] for item in deployment["schedules"])
    assert crons == sorted([WEEKLY, EVERY_MINUTE])
    assert deployment["parameters"] == {
        "params_path": "params.yaml",
        "overrides": [],
        "project_root": ".",
    }
    (step,) = deployment["pull_steps"]
    directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
    assert Path(directory) == project

    # Started once the deployment exists; a fixture, so that it stops however the test ends.
    worker: Worker = request.getfixturevalue("worker")

    def taken() -> dict | None:
        worker.look()
        runs = _runs(env, deployment["id"])
        return next((run for run in runs if run["state"]["type"] != "SCHEDULED"), None)

    run = _wait_for(taken, 180, "scheduled run taken by the worker", worker.log)
    # The next minute must not make a second run: pausing deletes the runs still scheduled.
    _api(env, f"/deployments/{deployment['id']}/pause_deployment", {})
    assert run["auto_scheduled"], run
    start = dt.datetime.fromisoformat(run["expected_start_time"].replace("Z", "+00:00"))
    assert (start.second, start.microsecond) == (0, 0), start

    def finished() -> dict | None:
        worker.look()
        state = _api(env, f"/flow_runs/{run['id']}")["state"]
        return state if state["type"] in FINISHED else None

    state = _wait_for(finished, 600, "finished flow run", worker.log)
    assert state["type"] == "COMPLETED", f"{state}\n{worker.log.read_text()[-4000:]}"
    # Taken up to PREFETCH_SECONDS early, but run on the schedule's minute, not tens of
    # seconds before it: Prefect's engine waits for the slot, and was seen to enter Running
    # half a second before it (CI, 2026-12-07), so a second's slack.
    ran = _api(env, f"/flow_runs/{run['id']}")
    started = dt.datetime.fromisoformat(ran["start_time"].replace("Z", "+00:00"))
    assert started >= start - dt.timedelta(seconds=1), ran
    assert [other["id"] for other in _runs(env, deployment["id"])] == [run["id"]]
    assert worker.seen, "the worker started no process for the flow run"

    client = MlflowClient(tracking_uri=services["MLFLOW_TRACKING_URI"])
    (version,) = client.search_model_versions(f"name = '{NAME}'")
    assert client.get_model_version_by_alias(NAME, "champion").version == version.version
    for key in CONTRACT_VERSION_TAGS:
        assert key in version.tags, key
    assert (project / "checkpoints" / "train" / "model.pt").exists()  # the run's project

    seconds = worker.stop()
    assert worker.process.returncode is not None
    assert worker.left_behind() == []
    print(
        f"\nworker: scheduled run {run['name']} COMPLETED, {NAME} v{version.version}; "
        f"{len(worker.seen)} process(es) under the worker, none left after it stopped "
        f"({seconds:.1f}s{', SIGKILL after the grace period' if worker.killed else ''}); "
        f"test {time.monotonic() - began:.0f}s"
    )
