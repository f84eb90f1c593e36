"""File locks: a second run waits and says who holds the lock; a dead holder's lock is freed."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iocane.base.locks import exclusive_lock, project_lock, registry_lock_path

HOLD = """
import sys, time
from pathlib import Path
from iocane.base.locks import project_lock
path = Path(sys.argv[1])
with project_lock(path, "iocane run"):
    Path(sys.argv[2]).touch()
    time.sleep(float(sys.argv[3]))
"""


def _holder(tmp_path: Path, seconds: float) -> tuple[subprocess.Popen, Path]:
    lock, ready = tmp_path / "run.lock", tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(ready), str(seconds)])
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.05)
    return process, lock


def test_a_second_run_waits_and_names_the_holder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    process, lock = _holder(tmp_path, seconds=1.5)
    assert f"(pid {process.pid} on {socket.gethostname()}" in lock.read_text()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="iocane"), project_lock(lock, "iocane sweep"):
        waited = time.monotonic() - started
        assert "iocane sweep (pid" in lock.read_text()
    process.wait()
    assert waited > 0.5, "it did not wait for the holder"
    assert "waiting for the project lock" in caplog.text
    assert f"held by iocane run (pid {process.pid} on {socket.gethostname()}" in caplog.text
    assert lock.read_text() == "", "the lock is released and its holder line cleared"


def test_the_kernel_releases_a_dead_holders_lock(tmp_path: Path) -> None:
    process, lock = _holder(tmp_path, seconds=600)
    process.send_signal(signal.SIGKILL)
    process.wait()
    started = time.monotonic()
    with project_lock(lock, "iocane run"):
        assert time.monotonic() - started < 5


def test_the_project_lock_is_reentrant_across_threads(tmp_path: Path) -> None:
    """A flow within a flow (Prefect runs them in threads) takes the lock again."""
    lock = tmp_path / "run.lock"
    inner = []
    with project_lock(lock, "iocane sweep"):
        worker = threading.Thread(target=lambda: inner.append(_take(lock)))
        worker.start()
        worker.join(timeout=10)
        assert inner == [True], "the nested take blocked"
        assert "iocane sweep" in lock.read_text(), "the outer holder is still named"
    assert lock.read_text() == ""


def _take(lock: Path) -> bool:
    with project_lock(lock, "iocane run"):
        return True


def test_the_exclusive_lock_serialises_threads(tmp_path: Path) -> None:
    path, order = tmp_path / "registry.lock", []

    def critical(name: str) -> None:
        with exclusive_lock(path):
            order.append(f"{name} in")
            time.sleep(0.2)
            order.append(f"{name} out")

    threads = [threading.Thread(target=critical, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [entry.split()[1] for entry in order] == ["in", "out", "in", "out"]


def test_a_server_registrys_lock_lives_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = registry_lock_path("http://mlflow:5000")
    assert path.parent == tmp_path / "iocane" / "locks"
    assert registry_lock_path("sqlite:////srv/mlflow.db") == Path("/srv/mlflow.db.lock")
