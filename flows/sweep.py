"""The ``sweep`` flow: a grid of hardening runs (eps, method, PGD steps, learning rate, model
and width, training budget, seed) as Prefect tasks on the runner params.yaml names, each point a
nested MLflow run, ending in a summary table that ranks the points (the most robust in the worst
case above a clean-accuracy floor) and the clean-versus-robust plot with its Pareto front.

Straight-line wiring of the sweep's engine (``iocane.pipeline.sweep``) and its two stages
(``tasks.sweep_point``). Every point is judged at the same threat model, the params'
``train.norm`` and ``train.eps``, whatever eps it trained at. The points train and evaluate
exactly as ``iocane run`` does, each in its own directory under ``sweeps/<sweep id>/``, beside
links to a snapshot of the project's prepared data and to the natural warmup of its model,
width and seed (trained once per model, width and seed, not per point). Points are compared, not
promoted: nothing is registered. Register a point's settings with ``iocane run --set ...``.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

from mlflow import MlflowClient
from prefect import flow
from prefect.artifacts import create_image_artifact, create_markdown_artifact

from iocane.base.config import Config, load_config
from iocane.base.files import write_text
from iocane.base.layout import Layout
from iocane.base.locks import project_lock
from iocane.pipeline.sweep import (
    grid,
    mark_pareto,
    min_clean_accuracy,
    rank,
    snapshot,
    summary_csv,
    summary_markdown,
    sweep_run,
    warmup_directory,
    warmups,
)
from iocane.registry.attempts import experiment_id
from iocane.registry.tracking import tracking_uri
from iocane.reports.sweep_figures import plot_front
from tasks.prefect_tasks import prepare_task, run_stage, sweep_point_task, sweep_warmup_task

SUMMARY_FILES = ("summary.csv", "summary.md", "pareto.png")


@flow(name="sweep")
def sweep(
    params_path: str = "params.yaml", overrides: list[str] | None = None, project_root: str = "."
) -> dict:
    """Train and evaluate every point of the params' ``sweep`` grid; returns the summary."""
    config: Config = load_config(params_path, overrides or [])
    layout = Layout(Path(project_root).resolve())
    points = grid(config)
    sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S")
    directory = layout.root / "sweeps" / sweep_id
    uri = tracking_uri(layout.root)
    client = MlflowClient(tracking_uri=uri)
    experiment = experiment_id(client, config.registry.model_name)
    threat = f"{config.train.norm} eps {config.train.eps:g}"
    with sweep_run(client, experiment_id=experiment, sweep_id=sweep_id, points=len(points)) as run:
        with project_lock(layout.run_lock, "iocane sweep"):
            run_stage(prepare_task, config, layout)
            prepared = str(snapshot(layout.prepared_dir, directory / "data" / "prepared"))
        warmup_futures = {
            key: sweep_warmup_task.submit(
                warmup_config, str(directory / warmup_directory(key)), prepared
            )
            for key, warmup_config in warmups(points).items()
        }
        # Wait for the warmups here and hand the points plain paths: a point that took the
        # warmup's future as an argument would be pinned by Dask to the worker holding it.
        warmup_dirs = {key: future.result() for key, future in warmup_futures.items()}
        futures = [
            sweep_point_task.submit(
                point,
                directory=str(directory / point.name),
                prepared=prepared,
                warmup=warmup_dirs[point.warmup_key],
                parent_run_id=run,
                uri=uri,
            )
            for point in points
        ]
        rows = [future.result() for future in futures]
        front = mark_pareto(rows)
        floor = min_clean_accuracy(config)
        ranked = rank(rows, floor)  # sets each row's rank; `rows` stay in the grid's order
        _log_ranking(client, run, ranked=ranked, floor=floor)
        write_text(directory / "summary.csv", summary_csv(ranked))
        markdown = summary_markdown(rows, threat, floor)
        write_text(directory / "summary.md", markdown)
        plot_front(rows, directory / "pareto.png", threat)
        for name in SUMMARY_FILES:
            client.log_artifact(run, str(directory / name))
        create_markdown_artifact(key="sweep-summary", markdown=markdown)
        png = base64.b64encode((directory / "pareto.png").read_bytes()).decode("ascii")
        create_image_artifact(image_url=f"data:image/png;base64,{png}", key="sweep-pareto")
    return {
        "sweep": sweep_id,
        "directory": str(directory),
        "mlflow_run": run,
        "points": rows,
        "pareto": sorted(front),
        "min_clean_accuracy": floor,
        "best": next((row["point"] for row in rows if row["rank"] == 1), None),
    }


def _log_ranking(client: MlflowClient, run: str, *, ranked: list[dict], floor: float) -> None:
    """The ranking's floor and its winner on the sweep's parent run: the best point's name as
    the tag ``iocane.sweep_best`` (none when no point clears the floor) and its figures."""
    client.log_param(run, "sweep.min_clean_accuracy", floor)
    best = ranked[0] if ranked and ranked[0]["rank"] == 1 else None
    client.set_tag(run, "iocane.sweep_best", best["point"] if best else "none")
    if best:
        for key in ("clean_accuracy", "robust_accuracy", "train_seconds", "train_cpu_seconds"):
            if best.get(key) is not None:
                client.log_metric(run, f"best_{key}", best[key])
