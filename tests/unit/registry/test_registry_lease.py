"""The registry lease: alias decisions from two machines, interleaved on purpose.

Two threads stand for two machines: each takes its own lock file (the file lock cannot see the
other), and both reach one registry (a sqlite file here, treated as shared so that the lease
applies). Machine A is paused between reading the champion and moving it, and machine B decides
in that gap: without the lease B's win is lost, with it B waits its turn.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from iocane.registry import aliases, lease
from iocane.registry.aliases import assign_alias, champion_stack, promote
from iocane.registry.lease import (
    LEASE_SOURCE,
    Lease,
    LeaseTimeout,
    lease_model_name,
    registry_lease,
    shared_registry,
)
from iocane.registry.promotion import CHAMPION
from tests.helpers.registry_files import copy_registry
from tests.unit.registry.test_promotion import NAME, create_version

PAUSE_LIMIT = 60.0  # seconds A waits for B at most (only reached when the test is broken)


@pytest.fixture
def registry(
    empty_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[MlflowClient, str]:
    monkeypatch.setenv("IOCANE_USER", "machine")
    uri = copy_registry(empty_registry, tmp_path)
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model(NAME)
    # One lock file per machine (thread): only the lease can order them.
    monkeypatch.setattr(
        aliases,
        "registry_lock_path",
        lambda uri: tmp_path / "locks" / f"{threading.current_thread().name}.lock",
    )
    return client, uri


def _interleave(
    monkeypatch: pytest.MonkeyPatch, uri: str, a_version: str, b_version: str
) -> dict[str, object]:
    """A decides for ``a_version`` and stops after its read; B decides for ``b_version`` while
    A is stopped. A goes on when B has finished, or when B waits for the lease behind A."""
    a_has_read, b_finished, b_queued = threading.Event(), threading.Event(), threading.Event()
    decide, wait_for_turn = aliases.alias_for_new_version, lease._wait_for_turn

    def paused_decision(candidate, champion, max_clean_regression):
        decision = decide(candidate, champion, max_clean_regression)
        if threading.current_thread().name == "machine-a":
            a_has_read.set()
            deadline = time.monotonic() + PAUSE_LIMIT
            while not (b_finished.is_set() or b_queued.is_set()):
                assert time.monotonic() < deadline, "B neither finished nor queued"
                time.sleep(0.01)
        return decision

    def queued(seconds: float) -> None:
        if threading.current_thread().name == "machine-b":
            b_queued.set()
        wait_for_turn(seconds)

    monkeypatch.setattr(aliases, "alias_for_new_version", paused_decision)
    monkeypatch.setattr(lease, "_wait_for_turn", queued)
    results: dict[str, object] = {}

    def machine(label: str, version: str, after: threading.Event | None) -> None:
        if after is not None:
            after.wait(PAUSE_LIMIT)
        try:
            results[label] = assign_alias(MlflowClient(uri), uri, NAME, version, 0.01).alias
        except BaseException as error:  # reported below: a thread's exception is lost
            results[label] = error
        if label == "b":
            b_finished.set()

    threads = [
        threading.Thread(target=machine, args=("a", a_version, None), name="machine-a"),
        threading.Thread(target=machine, args=("b", b_version, a_has_read), name="machine-b"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {**results, "b_queued": b_queued.is_set()}


def _champion(client: MlflowClient) -> str:
    return str(client.get_registered_model(NAME).aliases[CHAMPION])


def test_without_the_lease_the_interleaving_loses_a_decision(
    registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, uri = registry
    monkeypatch.setattr(aliases, "shared_registry", lambda uri: False)  # today: file locks only
    less, more = create_version(client, NAME, 0.80), create_version(client, NAME, 0.85)
    results = _interleave(monkeypatch, uri, a_version=less, b_version=more)
    # Both read "no champion", both claimed it; A wrote last: the less robust version is
    # champion although the more robust one was registered and decided.
    assert results["a"] == results["b"] == CHAMPION
    assert _champion(client) == less
    assert champion_stack(client, NAME) == [more, less]


def test_with_the_lease_the_same_interleaving_keeps_every_decision(
    registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, uri = registry
    monkeypatch.setattr(aliases, "shared_registry", lambda uri: True)
    less, more = create_version(client, NAME, 0.80), create_version(client, NAME, 0.85)
    results = _interleave(monkeypatch, uri, a_version=less, b_version=more)
    assert results["b_queued"], "B did not wait for the lease"
    assert results["a"] == results["b"] == CHAMPION  # B decided after A's move, against it
    assert _champion(client) == more
    assert champion_stack(client, NAME) == [less, more]
    assert client.search_model_versions(f"name='{lease_model_name(NAME)}'") == []


def test_a_killed_holder_blocks_only_until_its_ticket_expires(registry) -> None:
    client, _uri = registry
    with registry_lease(client, NAME, ttl=2.0):
        pass  # creates the lease model
    dead = client.create_model_version(lease_model_name(NAME), source=LEASE_SOURCE)
    started = time.monotonic()
    with registry_lease(client, NAME, ttl=2.0, poll=0.05) as held:
        waited = time.monotonic() - started
        assert held.ticket > int(dead.version)
    assert 1.0 < waited < 30.0
    assert client.search_model_versions(f"name='{lease_model_name(NAME)}'") == []


def test_a_live_holder_makes_the_next_wait_and_then_give_up(registry) -> None:
    client, _ = registry
    with (
        registry_lease(client, NAME),
        pytest.raises(LeaseTimeout, match="still ahead"),
        registry_lease(client, NAME, wait=0.3, poll=0.05),
    ):
        pass
    with registry_lease(client, NAME, wait=0.3):  # released: the next goes at once
        pass


def test_a_stalled_waiter_that_may_have_been_passed_over_gives_up(registry) -> None:
    client, _ = registry
    with registry_lease(client, NAME):
        pass  # creates the lease model
    model = lease_model_name(NAME)
    mine = client.create_model_version(model, source=LEASE_SOURCE)
    stamp = float(mine.last_updated_timestamp)
    lease._renew(client, model, int(mine.version), stamp, ttl=60.0)  # renewed in time: fine
    with pytest.raises(LeaseTimeout, match="without renewal"):  # a gap of a ttl: give up
        lease._renew(client, model, int(mine.version), stamp - 61_000, ttl=60.0)
    client.delete_model_version(model, mine.version)  # judged expired by the next in line
    with pytest.raises(LeaseTimeout, match="expired while this process waited"):
        lease._renew(client, model, int(mine.version), stamp, ttl=60.0)


def test_a_holder_too_old_to_write_gives_up() -> None:
    young = Lease(model="m.lease", ticket=1, taken=time.monotonic(), ttl=60.0)
    young.check()
    old = Lease(model="m.lease", ticket=1, taken=time.monotonic() - 31.0, ttl=60.0)
    with pytest.raises(LeaseTimeout, match="too late"):
        old.check()


def test_promotion_by_hand_takes_the_lease_too(registry, monkeypatch: pytest.MonkeyPatch) -> None:
    client, uri = registry
    monkeypatch.setattr(aliases, "shared_registry", lambda uri: True)
    first = create_version(client, NAME, 0.80)
    assign_alias(client, uri, NAME, first, 0.01)
    second = create_version(client, NAME, 0.70)
    assign_alias(client, uri, NAME, second, 0.01)
    taken = []
    real = aliases.registry_lease

    def recorded(*args, **kwargs):
        taken.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(aliases, "registry_lease", recorded)
    promote(client, uri, NAME, second, "reviewer's call")
    assert taken == [NAME] and _champion(client) == second


@pytest.mark.parametrize(
    ("uri", "shared"),
    [
        ("http://mlflow:5000", True),
        ("https://mlflow.example.org", True),
        ("postgresql://mlflow@db/mlflow", True),
        ("databricks", True),
        ("sqlite:////srv/mlflow.db", False),
        ("file:///srv/mlruns", False),
        ("/srv/mlruns", False),
    ],
)
def test_which_registries_need_the_lease(uri: str, shared: bool) -> None:
    assert shared_registry(uri) is shared
