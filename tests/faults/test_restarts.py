"""The servers restart under a running ``iocane run``: the MLflow server while the run registers,
the Prefect server while the flow trains.

Each server is this module's own (sqlite backends, ports in 18500-18599): stopping the session's
shared services would disturb the tests that share them. A restart stops the server's whole
process group, waits, and starts the same command again on the same port and backend.

Whatever the moment, the run either completes with one complete version, or fails with one
clear error line and a rerun completes; never two versions of the same evidence, never a
half-tagged version.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from iocane.base.layout import Layout
from tests.helpers.pipeline_params import CONTRACT_VERSION_TAGS, write_tiny_params
from tests.helpers.prefect_homes import seeded_home
from tests.helpers.servers import harden_runs_of, stop_process_group

pytestmark = [pytest.mark.fault]

PORTS = range(18500, 18600)
DOWN_SECONDS = 5  # how long a server stays stopped before it starts again
STARTUP_SECONDS = 240
# What a complete version carries besides the contract tags: its links, its evidence key, the
# run that holds its model card, and its alias decision's reason (set last).
COMPLETE_TAGS = {
    *CONTRACT_VERSION_TAGS,
    "model_card_uri",
    "run_id",
    "params",
    "evidence_key",
    "alias_reason",
}


def _port() -> int:
    for port in PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


class Server:
    """A server that can be stopped and started again: the same command, port and backend."""

    def __init__(self, command: list[str], env: dict[str, str], home: Path, health: str) -> None:
        self.command, self.env, self.home, self.health = command, env, home, health
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with (self.home / f"server-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                ["nice", "-n", "19", *self.command],
                cwd=self.home,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._answers():
            assert self.process.poll() is None, self._log()
            assert time.monotonic() < deadline, f"not answering:\n{self._log()}"
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        time.sleep(DOWN_SECONDS)
        self.start()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.health, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log_size(self) -> int:
        return len((self.home / f"server-{self.starts}.log").read_text())

    def saw(self, request: str, since: int) -> bool:
        """Whether the running server has answered ``request`` (a piece of its access log) since
        its log had ``since`` characters: the run under test's, not an earlier test's."""
        return request in (self.home / f"server-{self.starts}.log").read_text()[since:]

    def _log(self) -> str:
        return (self.home / f"server-{self.starts}.log").read_text()[-3000:]


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("mlflow-server")
    port = _port()
    command = [_tool("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(home / "artifacts")]
    # Unbuffered: the test reads the access log to know which request the run has made.
    env = {**_clean_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}
    server = Server(command, env, home, f"http://127.0.0.1:{port}/health")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def prefect_server(
    tmp_path_factory: pytest.TempPathFactory, prefect_home_template: Path
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("prefect-server")
    port = _port()
    command = [_tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = {
        **_clean_env(),
        "PREFECT_HOME": seeded_home(prefect_home_template, home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    server = Server(command, env, home, f"http://127.0.0.1:{port}/api/health")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _url(server: Server) -> str:
    return server.health.removesuffix("/health")


def _project(tmp_path: Path, name: str) -> Path:
    write_tiny_params(
        tmp_path / "params.yaml", evaluate={"n_samples": 60}, registry={"model_name": name}
    )
    return tmp_path


@pytest.fixture(scope="module")
def registering_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project for the tests whose fault lands in the register stage. Each registers under
    its own model name, which only the register stage reads (dvc.yaml): the first run computes
    prepare to gate, the later ones find those stages current (their cache keys are unchanged)
    and go straight to the register stage under test. Its code and the server's restart are
    the same; a run no longer trains for half a minute before it gets there."""
    project = tmp_path_factory.mktemp("registering") / "project"
    project.mkdir()
    return project


def _env(project: Path, mlflow: Server, prefect: Server) -> dict[str, str]:
    return {
        **_clean_env(),
        "MLFLOW_TRACKING_URI": _url(mlflow),
        "PREFECT_API_URL": _url(prefect),
        "PREFECT_HOME": str(project / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(project / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "XDG_CACHE_HOME": str(project / ".cache"),
    }


def _run(project: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        ["nice", "-n", "19", sys.executable, "-m", "iocane.cli", "run"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _restart_when(
    condition: Callable[[], bool], process: subprocess.Popen, server: Server
) -> tuple[int, str]:
    """Restart ``server`` once ``condition`` holds while ``process`` runs; its code and stderr."""
    deadline = time.monotonic() + 600
    while not condition():
        assert process.poll() is None, f"exited before the restart: {process.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the moment to restart"
        time.sleep(0.1)
    server.restart()
    _, err = process.communicate(timeout=600)
    return process.returncode, err


def _outcome(code: int, err: str, project: Path, env: dict[str, str]) -> str:
    """Completed, or failed with one clear line and then a rerun completed: which."""
    if code == 0:
        return "completed"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    rerun = subprocess.run(
        ["nice", "-n", "19", sys.executable, "-m", "iocane.cli", "run"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (project / "rerun.err").write_text(rerun.stderr)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return f"failed ({errors[0]}), rerun completed"


def _assert_one_complete_version(url: str, name: str) -> None:
    client = MlflowClient(tracking_uri=url)
    (version,) = client.search_model_versions(f"name='{name}'")
    assert set(version.tags) >= COMPLETE_TAGS, COMPLETE_TAGS - set(version.tags)
    assert version.description, "the model card is the version's description"
    cards = [item.path for item in client.list_artifacts(version.run_id, "reports")]
    assert "reports/model_card.md" in cards, cards
    assert client.get_registered_model(name).aliases == {"champion": version.version}


# The requests that mark moments of the register stage, in the MLflow server's access log.
REGISTER_BEGINS = "GET /api/2.0/mlflow/model-versions/search"
VERSION_CREATED = "POST /api/2.0/mlflow/model-versions/create"


@pytest.mark.parametrize("moment", [REGISTER_BEGINS, VERSION_CREATED], ids=["search", "created"])
def test_mlflow_server_restarts_while_the_run_registers(
    mlflow_server: Server,
    prefect_server: Server,
    registering_project: Path,
    moment: str,
    record_property: Callable[[str, object], None],
) -> None:
    name = f"iocane-restart-mlflow-{moment.split('/')[-1]}"
    project = _project(registering_project, name)
    env = _env(project, mlflow_server, prefect_server)
    since = mlflow_server.log_size()
    run = _run(project, env)
    code, err = _restart_when(lambda: mlflow_server.saw(moment, since), run, mlflow_server)
    record_property("faults_injected", 1)
    outcome = _outcome(code, err, project, env)
    print(f"MLflow restart at {moment}: {outcome}")
    _assert_one_complete_version(_url(mlflow_server), name)


def test_mlflow_server_down_while_registering_fails_clearly_and_a_rerun_completes(
    mlflow_server: Server,
    prefect_server: Server,
    registering_project: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """Down longer than the retries (made short here): one line naming the server, no version
    left half-tagged, and a rerun once it is back registers one complete version."""
    name = "iocane-restart-mlflow-down"
    project = _project(registering_project, name)
    env = {
        **_env(project, mlflow_server, prefect_server),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    since = mlflow_server.log_size()
    run = _run(project, env)
    deadline = time.monotonic() + 600
    while not mlflow_server.saw(VERSION_CREATED, since):
        assert run.poll() is None, f"exited before the fault: {run.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the version's creation"
        time.sleep(0.1)
    mlflow_server.stop()
    try:
        _, err = run.communicate(timeout=600)
    finally:
        mlflow_server.start()
    record_property("faults_injected", 1)
    (project / "run.err").write_text(err)
    assert run.returncode != 0, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert _url(mlflow_server) in errors[0], errors[0]
    print(f"MLflow down while registering: {errors[0]}")
    assert _outcome(run.returncode, err, project, _env(project, mlflow_server, prefect_server))
    # The version the server walked out of could not be deleted then; the rerun deleted it.
    assert "could not complete it" in (project / "rerun.err").read_text()
    _assert_one_complete_version(_url(mlflow_server), name)


def test_prefect_server_restarts_while_the_flow_runs(
    mlflow_server: Server,
    prefect_server: Server,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    name = "iocane-restart-prefect"
    project = _project(tmp_path, name)
    env = _env(project, mlflow_server, prefect_server)
    warmed = Layout(project).metrics_file("warmup")
    # In training: after the warm-up's metrics, before the evaluation's.
    code, err = _restart_when(warmed.exists, _run(project, env), prefect_server)
    record_property("faults_injected", 1)
    outcome = _outcome(code, err, project, env)
    print(f"Prefect restart while training: {outcome}")
    _assert_one_complete_version(_url(mlflow_server), name)
    # The restarted server has the whole story: the flow run, completed.
    ours = harden_runs_of(_url(prefect_server), project)
    states = [run["state"]["type"] for run in ours]
    assert states == ["COMPLETED"] if outcome == "completed" else "COMPLETED" in states, ours
    with contextlib.suppress(FileNotFoundError):
        assert Layout(project).run_lock.read_text() == "", "the lock is released"
