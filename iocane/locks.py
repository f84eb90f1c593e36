"""Advisory file locks: one writer at a time where two runs could interleave.

The registry's read-decide-write (read the champion, choose an alias, move it, record the
history) must not interleave between two flows registering at once, or both could read "no
champion" and both claim it. MLflow has no transaction for that, so iocane serialises it with
an exclusive ``flock`` on a lock file. ``flock`` is released by the kernel when the process
dies, so a crashed run never leaves a stale lock behind.

A project's working files (data/prepared, checkpoints, metrics, plots) belong to one run at a
time: ``project_lock`` makes a second ``iocane run`` (or DVC stage) in the same directory wait
for the first and say so, instead of both writing the same checkpoints.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("iocane")

# Project locks this process holds, with their depth: a flow within a flow takes it again.
_held: dict[Path, int] = {}


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def registry_lock_path(tracking_uri: str) -> Path:
    """Beside the sqlite file for a local registry; for a server, one lock per server URI in
    the user's cache (this serialises the runs of one machine, not of several: see README)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///") + ".lock")
    digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "iocane" / "locks" / f"registry-{digest}.lock"


@contextmanager
def project_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the project's run lock for the block; when another process holds it, say who and
    wait. ``what`` (the command) is recorded in the lock file for the next waiter's message.
    Reentrant within a process."""
    path = path.resolve()
    if _held.get(path):
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            log.warning(
                "waiting for the project lock %s: it is held by %s; this run starts when "
                "that one ends",
                path,
                holder,
            )
            started = time.monotonic()
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            log.info("got the project lock after %.0f s", time.monotonic() - started)
        os.ftruncate(descriptor, 0)
        holder = f"{what} (pid {os.getpid()} on {socket.gethostname()}, since {_now()})"
        os.pwrite(descriptor, holder.encode() + b"\n", 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            os.ftruncate(descriptor, 0)
    finally:
        os.close(descriptor)  # closing the descriptor releases the flock


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
