"""deploy/dev-services without starting anything: its usage, its defaults, and a start that
fails leaving nothing behind (tests/e2e/test_services*.py start the real services)."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_env_names_the_configured_host(tmp_path: Path) -> None:
    on_lan = _script(tmp_path, "env", IOCANE_SERVICES_HOST="10.1.2.3")
    assert "export MLFLOW_TRACKING_URI=http://10.1.2.3:18202" in on_lan.stdout
    assert "export PREFECT_API_URL=http://10.1.2.3:18203/api" in on_lan.stdout
    # Every interface: clients get this machine's name, or the one IOCANE_SERVICES_URL_HOST gives.
    everywhere = _script(tmp_path, "env", IOCANE_SERVICES_HOST="0.0.0.0")
    assert f"export MLFLOW_TRACKING_URI=http://{socket.getfqdn()}:18202" in everywhere.stdout
    named = _script(
        tmp_path, "env", IOCANE_SERVICES_HOST="0.0.0.0", IOCANE_SERVICES_URL_HOST="ml.team.example"
    )
    assert "export PREFECT_API_URL=http://ml.team.example:18203/api" in named.stdout
    assert "0.0.0.0" not in everywhere.stdout + named.stdout


def test_a_bad_prefect_ui_switch_stops_the_start_before_anything_runs(tmp_path: Path) -> None:
    no_postgres = str(tmp_path / "no-such-bin")  # were the switch read late, start would fail here
    completed = _script(
        tmp_path, "start", IOCANE_SERVICES_PREFECT_UI="maybe", IOCANE_SERVICES_PG_BIN=no_postgres
    )
    assert completed.returncode == 1
    assert completed.stderr.splitlines()[-1] == (
        "dev-services: IOCANE_SERVICES_PREFECT_UI='maybe': say 1 or 0 (true/false, yes/no, on/off)"
    )
    assert not (tmp_path / "state" / "services.json").exists()


def _network(monkeypatch: pytest.MonkeyPatch, **variables: str):
    """deploy/dev_services/network.py, imported as the script imports it, under ``variables``."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    for name in ("IOCANE_SERVICES_HOST", "IOCANE_SERVICES_URL_HOST", "IOCANE_SERVICES_PREFECT_UI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return importlib.import_module("dev_services.network")


def test_loopback_servers_keep_mlflow_s_own_host_check_and_no_prefect_ui(monkeypatch) -> None:
    network = _network(monkeypatch)
    assert network.configured_host() == "127.0.0.1"
    assert network.mlflow_allowed_hosts("127.0.0.1", 18202) == []
    assert network.prefect_ui_environment("http://127.0.0.1:18203/api") == {
        "PREFECT_UI_ENABLED": "false"
    }


def test_servers_beyond_loopback_accept_the_client_name_and_point_the_ui_at_it(
    monkeypatch,
) -> None:
    network = _network(
        monkeypatch,
        IOCANE_SERVICES_HOST="0.0.0.0",
        IOCANE_SERVICES_URL_HOST="ml.team.example",
        IOCANE_SERVICES_PREFECT_UI="on",
    )
    listen = network.configured_host()
    assert listen == "0.0.0.0"
    option, hosts = network.mlflow_allowed_hosts(listen, 18202)
    assert option == "--allowed-hosts"
    assert {"ml.team.example", "ml.team.example:18202", "127.0.0.1:*"} <= set(hosts.split(","))
    # The health checks stay on this machine; the browser is sent to the name clients use.
    assert network.local_host(listen) == "127.0.0.1"
    assert network.prefect_ui_environment("http://ml.team.example:18203/api") == {
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_UI_API_URL": "http://ml.team.example:18203/api",
    }
