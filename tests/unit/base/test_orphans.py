"""``iocane.base.orphans``: a wrapped command dies with the process that started it, and Prefect's
temporary server is started through the wrapper with Prefect's own command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import pytest
from prefect.server.api.server import SubprocessASGIServer

from iocane.base import orphans

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="parent-death signals are Linux's"
)


def _gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":  # a zombie: it has ended
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_wrapped_command_dies_when_its_parent_is_sigkilled() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import subprocess, sys, time
                from iocane.base.orphans import dying_with_this_process
                child = subprocess.Popen(dying_with_this_process(["/bin/sleep", "600"]))
                print(child.pid, flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    try:
        assert not _gone(child, timeout=0.5), "the child runs while its parent does"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone(child), "the child outlived its SIGKILLed parent"
    finally:
        if not _gone(child, timeout=0):
            os.kill(child, signal.SIGKILL)


def _started_commands(monkeypatch: pytest.MonkeyPatch, start) -> tuple[list[str], dict]:
    started = []

    def record(args, env, **_):
        started.append((args, env))

    monkeypatch.setattr(subprocess, "Popen", record)
    start(SimpleNamespace(port=18123))
    ((args, env),) = started
    return args, env


def test_the_temporary_server_is_prefects_own_command_through_the_wrapper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If a Prefect upgrade changes how its temporary server starts, this says so."""
    orphans.temporary_prefect_servers_die_with_us()
    orphans.temporary_prefect_servers_die_with_us()  # idempotent
    assert SubprocessASGIServer._run_uvicorn_command is orphans._run_uvicorn_dying_with_us
    prefects = _started_commands(monkeypatch, orphans.PREFECTS_OWN["_run_uvicorn_command"])
    ours = _started_commands(monkeypatch, SubprocessASGIServer._run_uvicorn_command)
    assert ours == (orphans.dying_with_this_process(prefects[0]), prefects[1])


def test_off_the_main_thread_the_server_starts_unwrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel ties the parent-death signal to the starting thread, not the process."""
    found = []
    thread = threading.Thread(
        target=lambda: found.append(
            _started_commands(monkeypatch, orphans._run_uvicorn_dying_with_us)
        )
    )
    thread.start()
    thread.join()
    ((args, _),) = found
    assert "iocane.base.orphans" not in args and args[1:3] == ["-m", "uvicorn"]
