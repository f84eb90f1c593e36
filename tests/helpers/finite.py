"""Scans for non-finite numbers in what a run wrote: ``NaN``, ``Infinity``, ``inf`` and ``nan``
as tokens in any text file, and NaN or infinite values in MLflow metrics. Strict JSON parsers
reject the first; no reader can compare the second."""

from __future__ import annotations

import math
import re
from pathlib import Path

from mlflow import MlflowClient

TEXT_SUFFIXES = {".json", ".yaml", ".yml", ".csv", ".tsv", ".md", ".html", ".txt", ".log"}
# A number-like token: not part of a word (Linf, info) nor of a longer number or name.
NON_FINITE = re.compile(r"(?<![\w.])[-+]?(?:nan|inf(?:inity)?)(?![\w])", re.IGNORECASE)
NOT_OURS = {".prefect", ".venv", "__pycache__"}  # Prefect's own store; no output of a run


def non_finite_tokens(root: Path) -> list[str]:
    """``path:line: token`` for every non-finite token in the text files under ``root``."""
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        if NOT_OURS & set(relative.parts):
            continue
        text = path.read_text(errors="replace")
        for match in NON_FINITE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{relative}:{line}: {match.group()}")
    return found


def text_files(root: Path) -> list[Path]:
    """The files ``non_finite_tokens`` reads: a scan that read nothing proves nothing."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix.lower() in TEXT_SUFFIXES
        and not NOT_OURS & set(path.relative_to(root).parts)
    ]


def non_finite_metrics(client: MlflowClient) -> tuple[list[str], int]:
    """``run/key@step = value`` for every non-finite value in the whole history of every metric of
    every run in the tracking store, and how many values were read."""
    found, read = [], 0
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    for run in client.search_runs(experiments, max_results=1000):
        for key in run.data.metrics:
            for point in client.get_metric_history(run.info.run_id, key):
                read += 1
                if not math.isfinite(point.value):
                    found.append(f"{run.info.run_id}/{key}@{point.step} = {point.value}")
    return found, read
