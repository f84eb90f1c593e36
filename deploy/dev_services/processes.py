"""The servers' processes: each in its own process group, stopped with everything it started.

Liveness comes from /proc, where a zombie (a process that ended but that no parent has reaped
yet, as happens to a detached server's children) counts as ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from dev_services import ServicesError


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat split after the command name; None when there is no such live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields  # a zombie has ended


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (a server and the workers it started)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop_group(pgid: int, name: str) -> None:
    """SIGTERM to the group, SIGKILL to what is left after 30 s; returns when none is left."""
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        if not group_members(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_members(pgid):
            time.sleep(0.2)
    if left := group_members(pgid):
        raise ServicesError(f"{name}: processes {left} survived SIGKILL")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> int:
    """Start a server in its own session (its own process group), detached from this script."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process.pid
