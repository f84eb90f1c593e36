"""Empty MLflow registries (sqlite files) for tests, copied from one made per session: MLflow
runs its schema migrations for every new database file, about 1.7 s of CPU, more than most
registry tests spend on what they test."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlflow import MlflowClient


def make_empty_registry(path: Path) -> Path:
    """A registry at ``path`` with MLflow's tables (and its default experiment), nothing else."""
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def copy_registry(template: Path, directory: Path) -> str:
    """``template`` copied to ``directory``/mlflow.db; the copy's tracking URI."""
    target = directory / "mlflow.db"
    shutil.copy(template, target)
    return f"sqlite:///{target}"
