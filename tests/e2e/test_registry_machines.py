"""Several machines, one MLflow server, no lost decision.

Three worker processes stand for three machines: each has its own project directory and its
own lock files (``XDG_CACHE_HOME``), so the file lock orders nothing between them; only the
registry lease does. In each trial every machine registers a version and decides its alias at
the same moment (``tests.helpers.registry_race``); afterwards the champion must be the version
the rules choose, ``champion_stack`` must record every move, no worker may have crashed and no
lease ticket may be left. Without the lease the same trials lose decisions (see the helper's
docstring to run that by hand; ``tests/unit/registry/test_registry_lease.py`` shows it
deterministically).

The server is the session's PostgreSQL-backed ``mlflow server`` (``deploy/dev-services``, the
``services`` fixture: a team's set-up); set ``IOCANE_TEST_MLFLOW_URI`` to run the trials against
another one. ``IOCANE_TEST_UNGUARDED=1`` runs the same trials with the file locks only (the
behaviour before the lease): the test then fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.registry_race import run_trials

TRIALS, MACHINES = 6, 3


@pytest.fixture(scope="module")
def server_uri(services: dict[str, str]) -> str:
    return os.environ.get("IOCANE_TEST_MLFLOW_URI") or services["MLFLOW_TRACKING_URI"]


def test_machines_deciding_at_once_lose_no_decision(
    services: dict[str, str], server_uri: str, tmp_path: Path
) -> None:
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
