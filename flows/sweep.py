"""The ``sweep`` flow: a grid of hardening runs (eps, method, PGD steps, learning rate, model
and width, training budget, seed) as Prefect tasks on the runner params.yaml names, each point a
nested MLflow run, ending in a summary table that ranks the points (the most robust in the worst
case above a clean-accuracy floor) and the clean-versus-robust plot with its Pareto front.

Straight-line wiring of the sweep's grid (``iocane.pipeline.sweep``) and its stages
(``tasks.sweep_point``, ``tasks.sweep_summary``). Every point is judged at the same threat model,
the params' ``train.norm`` and ``train.eps``, whatever eps it trained at. The points train and
evaluate exactly as ``iocane run`` does, each in its own directory under ``sweeps/<sweep id>/``,
beside links to a snapshot of the project's prepared data and to the natural warmup of its model,
width and seed (trained once per model, width and seed, not per point). Points are compared, not
promoted: nothing is registered. Register a point's settings with ``iocane run --set ...``.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow

from iocane.base.config import Config, load_config
from iocane.base.layout import Layout
from iocane.base.locks import project_lock
from iocane.pipeline.sweep.grid import grid, warmup_directory, warmups
from iocane.registry.sweep_runs import tracked_sweep
from iocane.registry.tracking import tracking_uri
from tasks.prefect_tasks import (
    prepare_task,
    run_stage,
    sweep_point_task,
    sweep_snapshot_task,
    sweep_summary_task,
    sweep_warmup_task,
)


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
    experiment = config.registry.model_name
    with tracked_sweep(uri, experiment=experiment, sweep_id=sweep_id, points=len(points)) as run:
        with project_lock(layout.run_lock, "iocane sweep"):
            run_stage(prepare_task, config, layout)
            prepared = str(
                sweep_snapshot_task(layout.prepared_dir, directory / "data" / "prepared")
            )
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
        summary = sweep_summary_task(config, rows, str(directory), run, uri)
    return {"sweep": sweep_id, "directory": str(directory), "mlflow_run": run, **summary}
