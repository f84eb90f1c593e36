"""deploy/dev-services' parts: the state directory, the server processes, PostgreSQL.

Only the standard library: the script runs before and outside the project's virtual environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HOST = "127.0.0.1"


class ServicesError(Exception):
    """A failure the user can act on: printed as one line, exit 1."""


def say(message: str) -> None:
    print(f"dev-services: {message}", file=sys.stderr, flush=True)


class State:
    """The paths of one state directory, and services.json (the ports and pids of a start)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.postgres = root / "postgres"  # owned by the PostgreSQL user: cluster and socket
        self.data = self.postgres / "data"
        self.password = root / "postgres.password"  # readable by the caller only
        self.mlflow_admin = root / "mlflow-admin.password"  # basic-auth's admin, the caller's
        self.mlflow_auth_config = root / "mlflow-auth.ini"
        self.artifacts = root / "mlflow-artifacts"
        self.prefect_home = root / "prefect"
        self.logs = root / "logs"
        self.file = root / "services.json"

    def read(self) -> dict:
        if not self.file.exists():
            return {}
        return json.loads(self.file.read_text())

    def write(self, record: dict) -> None:
        self.file.write_text(json.dumps(record, indent=2) + "\n")
