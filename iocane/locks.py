"""Advisory file locks: one writer at a time where two runs could interleave.

The registry's read-decide-write (read the champion, choose an alias, move it, record the
history) must not interleave between two flows registering at once, or both could read "no
champion" and both claim it. MLflow has no transaction for that, so iocane serialises it with
an exclusive ``flock`` on a lock file. ``flock`` is released by the kernel when the process
dies, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
