"""Prefect homes for the ``iocane run`` processes of the tests, seeded from one made per session.

A run without ``PREFECT_API_URL`` starts Prefect's temporary server on the database in its
``PREFECT_HOME``. In a new home that server first runs every schema migration and registers
Prefect's block types: about 3.5 s of CPU of the 8 its start costs, in each of about twenty
tests. The session makes one such home by starting that same server once; a test copies its
database and block-registration memo into its project's new home, and the run's own server then
finds them current, as in a user's home after the first run. The server itself, the flow and
every state it records stay real.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from filelock import FileLock

DATABASE = "prefect.db"
MEMO = "memo_store.toml"  # the hash of the block types already registered in the database

# Prefect's own temporary server, started and stopped once: it migrates and registers, as in
# any new home.
_START_AND_STOP = (
    "from prefect.server.api.server import SubprocessASGIServer\n"
    "server = SubprocessASGIServer()\n"
    "server.start(timeout=240)\n"
    "server.stop()\n"
)


def make_template(root: Path) -> Path:
    """``root``/prefect-home: a home whose database is migrated and whose block types are
    registered. Made once for all xdist workers (they share ``root``, under a lock)."""
    template = root / "prefect-home"
    with FileLock(str(root / "prefect-home.lock")):
        if (template / DATABASE).exists():
            return template
        scratch = root / "prefect-home-scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
        env |= {"PREFECT_HOME": str(scratch), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        started = subprocess.run(
            [sys.executable, "-c", _START_AND_STOP],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert started.returncode == 0, started.stderr[-3000:]
        building = root / "prefect-home-building"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        # The backup API: a consistent copy, whatever the stopped server left in its WAL file.
        with (
            closing(sqlite3.connect(scratch / DATABASE)) as source,
            closing(sqlite3.connect(building / DATABASE)) as target,
        ):
            source.backup(target)
        shutil.copy(scratch / MEMO, building / MEMO)
        building.rename(template)
        shutil.rmtree(scratch, ignore_errors=True)
    return template


def seeded_home(template: Path, home: Path) -> str:
    """A new Prefect home at ``home`` (a new folder, or one without a database) holding a copy
    of ``template``'s database and memo; its path, for ``PREFECT_HOME``. Call it once, where the
    project or server is made: a run or server in progress owns its home's database."""
    home.mkdir(parents=True, exist_ok=True)
    assert not (home / DATABASE).exists(), f"{home} has a database already"
    for name in (DATABASE, MEMO):
        shutil.copy(template / name, home / name)
    return str(home)
