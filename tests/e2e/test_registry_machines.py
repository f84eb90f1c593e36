"""Several machines, one MLflow server, no lost decision.

Three worker processes stand for three machines: each has its own project directory and its
own lock files (``XDG_CACHE_HOME``), so the file lock orders nothing between them; only the
registry lease does. In each trial every machine registers a version and decides its alias at
the same moment (``tests.helpers.registry_race``); afterwards the champion must be the version
the rules choose, ``champion_stack`` must record every move, no worker may have crashed and no
lease ticket may be left. Without the lease the same trials lose decisions (see the helper's
docstring to run that by hand; ``tests/unit/registry/test_registry_lease.py`` shows it
deterministically).

The server is a fresh ``mlflow server`` on sqlite; set ``IOCANE_TEST_MLFLOW_URI`` to run the
trials against another one (a PostgreSQL-backed server, say). ``IOCANE_TEST_UNGUARDED=1`` runs
the same trials with the file locks only (the behaviour before the lease): the test then fails.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.registry_race import run_trials
from tests.helpers.servers import running_server

TRIALS, MACHINES = 6, 3
PORTS = range(18300, 18400)


def _free_port_in_range() -> int:
    for port in PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("IOCANE_TEST_MLFLOW_URI"):
        yield os.environ["IOCANE_TEST_MLFLOW_URI"]
        return
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port_in_range()
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
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")},
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    with running_server(command, env, root, f"{url}/health"):
        yield url


def test_machines_deciding_at_once_lose_no_decision(server_uri: str, tmp_path: Path) -> None:
    unguarded = os.environ.get("IOCANE_TEST_UNGUARDED") == "1"
    outcome = run_trials(
        server_uri, tmp_path, trials=TRIALS, machines=MACHINES, unguarded=unguarded, seed=20
    )
    print(f"\nregistry race against {server_uri}: {outcome.summary()}")
    assert outcome.failures == [], "\n".join(outcome.failures)
    assert outcome.trials >= TRIALS
    assert outcome.decisions >= TRIALS * MACHINES
    # The trials must really overlap, or they prove nothing about the guard.
    assert outcome.contended >= 1
