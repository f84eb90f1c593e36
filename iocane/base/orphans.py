"""Processes iocane starts die with it, however it ends (SIGKILL included).

``python -m iocane.base.orphans PARENT_PID COMMAND...`` runs COMMAND so that it dies with
PARENT_PID.
A process tree left training after its launcher was SIGKILLed would keep writing checkpoints
while the rerun reads them. On Linux the kernel can deliver a signal to a process when its
parent dies (``prctl(PR_SET_PDEATHSIG)``); the setting survives ``exec``, so this module sets it
and then becomes COMMAND. Elsewhere it only runs COMMAND.

``temporary_prefect_servers_die_with_us()`` does the same for the temporary Prefect server
(uvicorn) that Prefect starts when no ``PREFECT_API_URL`` is set: see its docstring.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from typing import Any

PR_SET_PDEATHSIG = 1

# Prefect's methods replaced here, by name (a unit test compares the commands they start).
PREFECTS_OWN: dict[str, Any] = {}


def die_with_parent(parent_pid: int | None = None) -> None:
    """SIGKILL this process when its parent dies; exit now if ``parent_pid`` is already gone
    (it died before the setting took effect, and this process was handed to init).

    The kernel's "parent" is the thread that started this process: it must be one that lives
    as long as the process does (the main thread)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        return  # not fatal: the process only loses the protection
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def dying_with_this_process(command: list[str]) -> list[str]:
    """``command`` run through this module, so that it dies with the calling process."""
    return [sys.executable, "-m", "iocane.base.orphans", str(os.getpid()), *command]


def temporary_prefect_servers_die_with_us() -> None:
    """Start Prefect's temporary servers through ``python -m iocane.base.orphans`` from now on.

    Without ``PREFECT_API_URL`` Prefect starts a temporary API server (``SubprocessASGIServer``:
    ``python -m uvicorn ... prefect.server.api.server:create_app``) for the first client it
    needs, and stops it in an ``atexit`` hook. A SIGKILLed process runs no hook: every killed
    ``iocane run`` left one uvicorn server behind, for good. Only the method that builds the
    server's process is replaced; Prefect keeps choosing the port, waiting for the server's
    health, reusing it and stopping it at a normal exit, and treats it as its own temporary
    server (no UI links, nothing exported to the processes iocane starts).

    Rejected alternatives: iocane starting a server itself and exporting ``PREFECT_API_URL``
    (Prefect would then treat it as a permanent server, and the same start-up code would be
    copied with more of Prefect's internals); a watchdog process that kills a process group
    (one more process to leave behind, and the group is not ours when iocane runs inside a
    shell's or a test's). Idempotent; a no-op where Prefect's internals have changed, which
    ``tests/unit/base/test_orphans.py`` would report."""
    from prefect.server.api.server import SubprocessASGIServer

    own = SubprocessASGIServer.__dict__.get("_run_uvicorn_command")
    if own is None or own is _run_uvicorn_dying_with_us:
        return
    PREFECTS_OWN["_run_uvicorn_command"] = own
    SubprocessASGIServer._run_uvicorn_command = _run_uvicorn_dying_with_us


def temporary_prefect_server_command(port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment Prefect 3 starts its temporary server with (as in
    ``SubprocessASGIServer._run_uvicorn_command``; a unit test compares the two)."""
    import prefect
    from prefect.settings import get_current_settings

    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    env = {
        **os.environ,
        # no UI, and the server knows it is a temporary one
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    return command, env


def _run_uvicorn_dying_with_us(server: Any) -> subprocess.Popen:
    command, env = temporary_prefect_server_command(server.port)
    # The parent-death signal follows the thread that started the process: a server started
    # from a short-lived thread would die with that thread, in the middle of the run. Prefect
    # starts it from the main thread (the flow's first client); from any other, the server
    # is started as Prefect would, unprotected, rather than killed early.
    if threading.current_thread() is threading.main_thread():
        command = dying_with_this_process(command)
    return subprocess.Popen(command, env=env)


if __name__ == "__main__":
    die_with_parent(int(sys.argv[1]))
    os.execv(sys.argv[2], sys.argv[2:])
