"""Advisory file locks: one writer at a time where two runs could interleave.

The registry's read-decide-write (read the champion, choose an alias, move it, record the
history) must not interleave between two flows registering at once, or both could read "no
champion" and both claim it. MLflow has no transaction for that, so iocane serialises it with
an exclusive lock on a lock file (``filelock``, an ``flock`` on Unix). ``flock`` is released by
the kernel when the process dies, so a crashed run never leaves a stale lock behind.

A project's working files (data/prepared, checkpoints, metrics, plots) belong to one run at a
time: ``project_lock`` makes a second ``iocane run`` (or DVC stage) in the same directory wait
for the first and say so, instead of both writing the same checkpoints.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from iocane.base.settings import settings

log = logging.getLogger("iocane")


def _file_lock(path: Path, *, is_singleton: bool = False) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(
        path,
        mode=0o644,
        # Held for the process, not the thread: Prefect runs tasks and subflows in threads.
        thread_local=False,
        is_singleton=is_singleton,
        preserve_lock_file=True,  # the next waiter reads who holds it from the file
        fallback_to_soft=False,  # a lock file left by a dead process would block every run
    )


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block."""
    with _file_lock(path):
        yield


def registry_lock_path(tracking_uri: str) -> Path:
    """Beside the sqlite file for a local registry; for a server, one lock per server URI in
    the user's cache (this serialises the runs of one machine, not of several: see README)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///") + ".lock")
    digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
    return settings().cache_home / "iocane" / "locks" / f"registry-{digest}.lock"


@contextmanager
def project_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the project's run lock for the block; when another process holds it, say who and
    wait. ``what`` (the command) is recorded in the lock file for the next waiter's message.
    Reentrant within a process (a flow within a flow takes it again)."""
    path = path.resolve()
    # One lock object per path in this process, so taking it again only counts up.
    lock = _file_lock(path, is_singleton=True)
    if lock.is_locked:
        with lock:
            yield
        return
    try:
        lock.acquire(blocking=False)
    except Timeout:
        holder = path.read_text().strip() or "another process"
        log.warning(
            "waiting for the project lock %s: it is held by %s; this run starts when that one ends",
            path,
            holder,
        )
        started = time.monotonic()
        lock.acquire()
        log.info("got the project lock after %.0f s", time.monotonic() - started)
    try:
        path.write_text(f"{what} (pid {os.getpid()} on {socket.gethostname()}, since {_now()})\n")
        yield
    finally:
        path.write_text("")  # still held: no waiter reads a finished run as the holder
        lock.release()


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
