"""``python -m iocane.orphans PARENT_PID COMMAND...``: run COMMAND so that it dies with PARENT_PID.

A process tree left training after its launcher was SIGKILLed would keep writing checkpoints
while the rerun reads them. On Linux the kernel can deliver a signal to a process when its
parent dies (``prctl(PR_SET_PDEATHSIG)``); the setting survives ``exec``, so this module sets it
and then becomes COMMAND. Elsewhere it only runs COMMAND.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """SIGKILL this process when its parent dies; exit now if ``parent_pid`` is already gone
    (it died before the setting took effect, and this process was handed to init)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        return  # not fatal: the process only loses the protection
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


if __name__ == "__main__":
    die_with_parent(int(sys.argv[1]))
    os.execv(sys.argv[2], sys.argv[2:])
