"""One set of real services for the whole test session: PostgreSQL, an MLflow server with proxied
artifacts and a Prefect server on it, started by ``deploy/dev-services`` (the script the docs'
team set-up uses) the first time a test asks for them, and stopped when the session ends.

Under xdist the controller chooses the state directory before the workers start (they inherit
it through IOCANE_TEST_SERVICES_DIR); the first worker to need the services starts them under a
file lock, the others find them running, and the controller stops them at the end. Tests that
share the servers keep apart by their own registered model name and project directory.

When the services cannot start, their tests skip, except under IOCANE_REQUIRE_SERVICES=1 (set
by .ci/run), where they fail: CI never skips them silently.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from filelock import FileLock

from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.servers import free_port

SCRIPT = PROJECT_ROOT / "deploy" / "dev-services"
DIRECTORY_VARIABLE = "IOCANE_TEST_SERVICES_DIR"
REQUIRE_VARIABLE = "IOCANE_REQUIRE_SERVICES"
START_SECONDS = 600  # PostgreSQL's first initdb and both servers' migrations on a loaded machine


def _script(command: str, state: Path, *options: str, **ports: int) -> subprocess.CompletedProcess:
    variables = {f"IOCANE_SERVICES_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    return subprocess.run(
        [sys.executable, str(SCRIPT), command, *options],
        env={**os.environ, "IOCANE_SERVICES_DIR": str(state), **variables},
        capture_output=True,
        text=True,
        timeout=START_SECONDS,
    )


def choose_directory(config: pytest.Config) -> None:
    """In the controller (or the only process), before any worker starts: where the services'
    state will be. /tmp, not pytest's 0700 tmp: the PostgreSQL user must reach it."""
    if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get(DIRECTORY_VARIABLE):
        return
    directory = Path(tempfile.mkdtemp(prefix="iocane-services-"))
    directory.chmod(0o755)
    os.environ[DIRECTORY_VARIABLE] = str(directory)
    config.stash[_OWNED] = directory


_OWNED = pytest.StashKey[Path]()


def stop_services(config: pytest.Config) -> None:
    """In the process that chose the directory: stop whatever a worker started, remove it all."""
    directory = config.stash.get(_OWNED, None)
    if directory is None:
        return
    os.environ.pop(DIRECTORY_VARIABLE, None)
    if (directory / "state" / "services.json").exists():
        stopped = _script("stop", directory / "state")
        if stopped.returncode != 0:
            sys.stderr.write(f"deploy/dev-services stop failed:\n{stopped.stderr}\n")
            return  # leave the state for a look
    shutil.rmtree(directory, ignore_errors=True)


def start_summary(config: pytest.Config) -> str | None:
    """One line for the terminal summary: how long the services took to start, if they did."""
    directory = config.stash.get(_OWNED, None)
    outcome = directory / "outcome.json" if directory else None
    if outcome is None or not outcome.exists():
        return None
    record = json.loads(outcome.read_text())
    if record["ok"]:
        return f"services (PostgreSQL, MLflow, Prefect): started in {record['seconds']:.1f}s"
    last = record["error"].splitlines()[-1]
    return f"services (PostgreSQL, MLflow, Prefect): failed to start: {last}"


def start(state: Path, *options: str) -> dict:
    """``deploy/dev-services start`` on free ports; the outcome: ok, error, seconds, state."""
    ports = {"pg": free_port(), "mlflow": free_port(), "prefect": free_port()}
    began = time.monotonic()
    try:
        started = _script("start", state, *options, **ports)
        error = None if started.returncode == 0 else started.stderr.strip()
    except subprocess.TimeoutExpired:
        error = f"deploy/dev-services start took over {START_SECONDS}s"
    seconds = time.monotonic() - began
    return {"ok": error is None, "error": error, "state": str(state), "seconds": seconds}


def stop(state: Path) -> None:
    stopped = _script("stop", state)
    assert stopped.returncode == 0, f"deploy/dev-services stop failed:\n{stopped.stderr}"


def _start_once(directory: Path) -> dict:
    """Start the services unless an earlier test (any worker) has tried: the outcome is shared."""
    outcome = directory / "outcome.json"
    with FileLock(directory / "start.lock"):
        if not outcome.exists():
            outcome.write_text(json.dumps(start(directory / "state")))
    return json.loads(outcome.read_text())


def client_environment(record: dict) -> dict[str, str]:
    """What a started set offers a test: the variables ``deploy/dev-services env`` prints
    (MLFLOW_TRACKING_URI, PREFECT_API_URL, and under --auth MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD), the state directory (``state``), and a PostgreSQL URL with the
    password, without a database (``postgres_url``), for tests that look into the databases.
    A set that did not start skips the test, or fails it under IOCANE_REQUIRE_SERVICES=1."""
    if not record["ok"]:
        message = f"the services did not start (deploy/dev-services start):\n{record['error']}"
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(message)
        pytest.skip(f"the services did not start: {record['error'].splitlines()[-1]}")
    state = Path(record["state"])
    printed = _script("env", state)
    assert printed.returncode == 0, printed.stderr
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines()
    )
    port = json.loads((state / "services.json").read_text())["ports"]["postgres"]
    password = (state / "postgres.password").read_text()
    return {
        **exports,
        "state": str(state),
        "postgres_url": f"postgresql://iocane:{password}@127.0.0.1:{port}",
    }


def services_fixture() -> dict[str, str]:
    """The session's set (see ``client_environment``), started by the first test that asks."""
    directory = os.environ.get(DIRECTORY_VARIABLE)
    if directory is None:
        pytest.fail(
            f"{DIRECTORY_VARIABLE} is not set: tests/conftest.py's pytest_configure did not run"
        )
    return client_environment(_start_once(Path(directory)))


def user_environment(project: Path, services: dict[str, str], **extra: str) -> dict[str, str]:
    """A user's environment against the services: their URLs (and ``extra``: credentials, say),
    nothing else of MLflow's or Prefect's, and the project's own Prefect home and caches."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))},
        "MLFLOW_TRACKING_URI": services["MLFLOW_TRACKING_URI"],
        "PREFECT_API_URL": services["PREFECT_API_URL"],
        "PREFECT_HOME": str(project / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(project / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "XDG_CACHE_HOME": str(project / ".cache"),
        **extra,
    }
