"""deploy/dev-services without starting anything: its usage, its defaults, and a start that
fails leaving nothing behind (tests/e2e/test_services*.py start the real services)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.services import SCRIPT


def _script(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IOCANE_SERVICES_")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={**environ, "IOCANE_SERVICES_DIR": str(tmp_path / "state"), **variables},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_unknown_command_prints_the_usage_and_exits_2(tmp_path: Path) -> None:
    for args in ([], ["restart"], ["stop", "--auth"], ["start", "--other"]):
        completed = _script(tmp_path, *args)
        assert completed.returncode == 2, args
        assert completed.stderr.startswith("usage: dev-services {start,stop,status,env}")


def test_env_prints_the_default_and_the_configured_ports(tmp_path: Path) -> None:
    assert _script(tmp_path, "env").stdout.splitlines() == [
        "export MLFLOW_TRACKING_URI=http://127.0.0.1:18202",
        "export PREFECT_API_URL=http://127.0.0.1:18203/api",
    ]
    configured = _script(
        tmp_path, "env", IOCANE_SERVICES_MLFLOW_PORT="18250", IOCANE_SERVICES_PREFECT_PORT="18251"
    )
    assert "export MLFLOW_TRACKING_URI=http://127.0.0.1:18250" in configured.stdout
    assert "export PREFECT_API_URL=http://127.0.0.1:18251/api" in configured.stdout


def test_status_and_stop_when_nothing_was_started(tmp_path: Path) -> None:
    status = _script(tmp_path, "status")
    assert (status.returncode, status.stdout.split(" (")[0]) == (1, "not started")
    stop = _script(tmp_path, "stop")
    assert stop.returncode == 0 and "nothing started" in stop.stderr


def test_a_start_that_fails_says_why_and_leaves_nothing_started(tmp_path: Path) -> None:
    # No PostgreSQL where it is said to be (or, under root, a state directory in pytest's
    # 0700 tmp, which the postgres user cannot reach): either way, nothing may stay running.
    completed = _script(tmp_path, "start", IOCANE_SERVICES_PG_BIN=str(tmp_path / "no-such-bin"))
    assert completed.returncode == 1, completed.stderr
    assert completed.stderr.splitlines()[-1].startswith("dev-services: ")
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "state" / "services.json").exists()
    assert not (tmp_path / "state" / "postgres" / "data" / "postmaster.pid").exists()
