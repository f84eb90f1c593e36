"""The sweep's last stage (``flows/sweep.py``): the points' rows ranked and their Pareto front
marked, the summary files written in the sweep's directory, and the ranking and those files
recorded on the sweep's MLflow run. Its Prefect task (``sweep-summary``, in
``tasks.prefect_tasks``) adds the summary's Prefect artifacts.
"""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from iocane.base.config import Config
from iocane.pipeline.sweep.pareto import mark_pareto
from iocane.pipeline.sweep.ranking import min_clean_accuracy, rank
from iocane.registry.sweep_runs import log_ranking
from iocane.reports.sweep_summary import SUMMARY_FILES, write_summary_files


def run_sweep_summary(
    config: Config, rows: list[dict], directory: str, parent_run_id: str, uri: str
) -> dict:
    """Rank the points' ``rows`` (in the grid's order) at the floor of ``min_clean_accuracy``
    and mark the Pareto front, write the summary files in ``directory`` and log them on the
    sweep's run. Returns the summary: the rows (each with its rank and Pareto mark, in the
    grid's order), the front, the floor and the best point (None when none clears the floor)."""
    threat = f"{config.train.norm} eps {config.train.eps:g}"
    front = mark_pareto(rows)
    floor = min_clean_accuracy(config)
    ranked = rank(rows, floor)  # sets each row's rank; `rows` stay in the grid's order
    client = MlflowClient(tracking_uri=uri)
    log_ranking(client, parent_run_id, ranked=ranked, floor=floor)
    write_summary_files(rows, ranked, Path(directory), threat=threat, min_clean=floor)
    for name in SUMMARY_FILES:
        client.log_artifact(parent_run_id, str(Path(directory) / name))
    return {
        "points": rows,
        "pareto": sorted(front),
        "min_clean_accuracy": floor,
        "best": next((row["point"] for row in rows if row["rank"] == 1), None),
    }
