"""A lease held in the registry itself: one alias decision at a time, whichever machine asks.

Why a lease, and why this one
-----------------------------
Moving ``champion`` is a read-decide-write (read the champion, compare, move the alias, push the
version on the ``champion_stack`` tag). MLflow offers no compare-and-set on an alias or a tag, so
two deciders on two machines interleave like this (A registers v1, the less robust; B v2):

    A reads: no champion              B reads: no champion
                                      B decides: v2 is champion, moves it, stack [2]
    A decides: v1 is champion, moves it (v2's win is lost), stack [1] or [2, 1]

The file lock (``iocane.base.locks``) forbids this on one machine only. Two candidates were weighed:

- an optimistic check (decide, write, re-list, redo when something changed) converges only when
  the decision is a function of the set of versions. iocane's is not: a new version is compared
  with the champion *of the moment*, and ``iocane promote``/``rollback`` move it by hand, so the
  champion depends on the order of the moves. Undoing another decider's write is exactly the
  lost update the check would have to detect, with no atomic step to detect it with;
- a lease on a tag (write your name, pause, re-read) is Fischer's algorithm: it is safe only if
  no writer takes longer than the pause between its read and its write, which a slow HTTP call
  or a paused VM breaks.

The registry does have one atomic step: it numbers the versions of a registered model, each
number once (a unique key in its database; a losing insert retries with the next number), and a
deleted version keeps its number (soft delete). So the lease is a ticket queue, the bakery
algorithm with the registry as the baker:

1. take a ticket: create a version of the lease model ``<name>.lease`` (made on first use);
2. wait until no live ticket with a lower number remains (list the lease model's versions);
3. decide and write; 4. release: delete the ticket.

Why it excludes: ticket ``n + 1`` is only numbered after ``n`` is committed (the next number is
the highest committed one plus one), so when the holder of ``m`` lists the tickets below ``m`` it
sees every one that will ever exist; it goes ahead only when all of them are released. Two
holders ``m < k`` at once would need ``k`` to have seen ``m`` released while ``m`` still held it.
Why it does not starve: tickets are served in number order. Why a killed holder does not block
forever: a ticket expires ``ttl`` seconds after it was last renewed, and the next in line
treats it as released (and deletes it). A waiting ticket is renewed while it waits (a
description update stamps the version's ``last_updated_timestamp``), and once more when its
turn comes. Expiry is measured on the server's clock only (those stamps, plus the waiter's
elapsed monotonic time since its own last stamp, taken before it lists the queue), so clock
skew between machines does not matter, and a waiter judges a ticket expired only when it truly
went ``ttl`` without a stamp. The expired one may be alive, only stalled (a paused VM): when it
wakes, its next renewal shows the gap (or fails, the ticket being deleted) and it gives up
rather than hold the lease it may have been passed over for. A holder that overruns its ticket
could still write after the next one took over; so a holder checks its age before it writes
(``Lease.check``, at half the ttl) and gives up instead: the one timing assumption left is that
the writes after the check finish within the other half.

Only registries several machines can share need it: an ``sqlite:`` or ``file:`` registry lives
on one machine, where the file lock is enough (and the fast path: runs on one machine queue on
the file lock first, so at most one per machine takes a ticket).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

log = logging.getLogger("iocane")

LEASE_SUFFIX = ".lease"
# A ticket has no model files; a URI (not a path) the server accepts without a run.
LEASE_SOURCE = "iocane-lease:/ticket"
TTL_SECONDS = 120.0  # a decision takes seconds; a killed holder blocks the others this long
WAIT_SECONDS = 900.0  # longest wait for the tickets ahead before giving up
POLL_SECONDS = 0.25


class LeaseTimeout(RuntimeError):
    """No turn in time, or a holder too slow to write safely; the message says which."""


def shared_registry(uri: str) -> bool:
    """Whether several machines can reach the registry at ``uri`` (a server or a database
    server), so that the file lock alone does not serialise its alias decisions."""
    scheme = urlparse(uri).scheme
    return uri.startswith("databricks") or scheme not in ("", "file", "sqlite")


def lease_model_name(name: str) -> str:
    return f"{name}{LEASE_SUFFIX}"


@dataclass
class Lease:
    """A held turn: ticket ``ticket`` of ``model``, taken at ``taken`` (monotonic seconds,
    measured before the request, so the holder never underestimates its age)."""

    model: str
    ticket: int
    taken: float
    ttl: float

    def check(self) -> None:
        """Raise ``LeaseTimeout`` when the lease is too old to start writing under it."""
        age = time.monotonic() - self.taken
        if age > self.ttl / 2:
            raise LeaseTimeout(
                f"the registry lease {self.model} ticket {self.ticket} is {age:.0f} s old (its "
                f"ttl is {self.ttl:.0f} s): too late to move an alias safely; run again"
            )


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _take_ticket(client: MlflowClient, model: str) -> ModelVersion:
    """A new version of the lease model: its number is the ticket."""
    try:
        return client.create_model_version(model, source=LEASE_SOURCE, tags={"holder": _holder()})
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        client.create_registered_model(
            model,
            description=(
                "iocane's registry lease: each version is a ticket held while one alias decision "
                f"runs on {model.removesuffix(LEASE_SUFFIX)}. Not a model; leave it alone."
            ),
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":  # another machine made it first
            raise
    return client.create_model_version(model, source=LEASE_SOURCE, tags={"holder": _holder()})


def _release(client: MlflowClient, model: str, ticket: int) -> None:
    try:
        client.delete_model_version(model, str(ticket))
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":  # expired and removed by the next
            log.warning(
                "could not release %s ticket %s (it expires by itself): %s", model, ticket, error
            )


def _wait_for_turn(seconds: float) -> None:
    """The pause between two looks at the queue (a seam for the interleaving tests)."""
    time.sleep(seconds)


def _renew(
    client: MlflowClient, model: str, ticket: int, previous: float, ttl: float
) -> tuple[float, float]:
    """Stamp the ticket alive now. Returns the server's stamp (ms) and the monotonic time the
    answer came back: the server's clock then read at least the stamp. Raises ``LeaseTimeout``
    when the ticket went ``ttl`` without a stamp since ``previous``: in that gap another
    waiter may have judged it expired and gone ahead, so it must not hold the lease now."""
    try:
        version = client.update_model_version(model, str(ticket), description=f"alive: {_holder()}")
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise LeaseTimeout(
            f"the registry lease {model} ticket {ticket} expired while this process waited "
            "(it stalled for longer than the ttl) and was removed by the next in line; run again"
        ) from error
    stamp = float(version.last_updated_timestamp)
    if stamp - previous >= ttl * 1000:
        raise LeaseTimeout(
            f"the registry lease {model} ticket {ticket} went {(stamp - previous) / 1000:.0f} s "
            f"without renewal (its ttl is {ttl:.0f} s): this process stalled and may have been "
            "passed over; run again"
        )
    return stamp, time.monotonic()


def _live_tickets_ahead(
    client: MlflowClient, model: str, ticket: int, server_now: float, ttl: float
) -> list[ModelVersion]:
    """The tickets below ``ticket`` that are neither released nor expired; removes the expired."""
    ahead = [
        version
        for version in client.search_model_versions(f"name='{model}'")
        if int(version.version) < ticket
    ]
    live = []
    for version in ahead:
        if version.last_updated_timestamp + ttl * 1000 > server_now:
            live.append(version)
            continue
        log.warning(
            "the registry lease %s ticket %s (%s) expired: its holder died or hung; taking over",
            model,
            version.version,
            version.tags.get("holder", "unknown holder"),
        )
        _release(client, model, int(version.version))
    return live


def _await_turn(
    client: MlflowClient, model: str, mine: ModelVersion, *, ttl: float, wait: float, poll: float
) -> float:
    """Return when no live ticket is ahead of ``mine``; renew ``mine`` while waiting. Returns
    the last stamp. The server's time passed to ``_live_tickets_ahead`` is estimated before the
    listing is requested, so it never exceeds the server's time when the listing is read."""
    ticket = int(mine.version)
    stamp, stamped = float(mine.last_updated_timestamp), time.monotonic()
    started = stamped
    logged = False
    while True:
        live = _live_tickets_ahead(
            client, model, ticket, stamp + (time.monotonic() - stamped) * 1000, ttl
        )
        if not live:
            return stamp
        if not logged:
            holders = ", ".join(version.tags.get("holder", "?") for version in live)
            log.info("waiting for the registry lease %s: held or queued by %s", model, holders)
            logged = True
        if time.monotonic() - started > wait:
            raise LeaseTimeout(
                f"waited {wait:.0f} s for the registry lease {model}; still ahead: tickets "
                f"{[int(version.version) for version in live]}"
            )
        _wait_for_turn(poll)
        if time.monotonic() - stamped > ttl / 4:
            stamp, stamped = _renew(client, model, ticket, stamp, ttl)


@contextmanager
def registry_lease(
    client: MlflowClient,
    name: str,
    *,
    ttl: float = TTL_SECONDS,
    wait: float = WAIT_SECONDS,
    poll: float = POLL_SECONDS,
) -> Iterator[Lease]:
    """Hold the registry lease of registered model ``name`` for the block: no other holder, on
    any machine, until it ends or ``ttl`` passes. Raises ``LeaseTimeout`` after ``wait``."""
    model = lease_model_name(name)
    mine = _take_ticket(client, model)
    ticket = int(mine.version)
    try:
        stamp = _await_turn(client, model, mine, ttl=ttl, wait=wait, poll=poll)
        taken = time.monotonic()  # before the renewal: the holder never underestimates its age
        _renew(client, model, ticket, stamp, ttl)
        yield Lease(model=model, ticket=ticket, taken=taken, ttl=ttl)
    finally:
        _release(client, model, ticket)
