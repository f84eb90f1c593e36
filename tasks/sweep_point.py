"""The sweep's two stages (``flows/sweep.py``): the natural warmup one width and seed share, and
one point, trained and judged exactly as ``iocane run`` does (the same stage functions), in its
own directory beside links to the sweep's snapshot of the prepared data and to its warmup.

A point is recorded in its own MLflow run, nested in the sweep's: its params, figures, report
and metrics. Points are compared, not promoted: nothing is registered.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Param

from iocane.base.config import Config
from iocane.base.layout import Layout
from iocane.pipeline.sweep.grid import Point
from iocane.pipeline.sweep.links import link_directory
from iocane.registry.sweep_runs import point_run
from iocane.registry.tracking import SKIPPED_TAG, evaluation_metrics, finite_metrics, flatten
from tasks.evaluate import run_evaluate
from tasks.gate import run_gate
from tasks.train import run_train
from tasks.warmup import run_warmup


def run_sweep_warmup(config: Config, directory: str, prepared: str) -> str:
    """The natural warmup of one width and seed, shared by the points that have them; returns
    its checkpoint directory."""
    layout = Layout(Path(directory))
    link_directory(layout.prepared_dir, Path(prepared))
    run_warmup(config, layout)
    return str(layout.checkpoint_dir("warmup"))


def run_sweep_point(
    point: Point, directory: str, prepared: str, warmup: str, parent_run_id: str, uri: str
) -> dict:
    """Train one point and judge it at the sweep's threat model; its nested MLflow run holds its
    params, figures and report. Returns the point's row of the sweep's summary."""
    started = time.time()
    config, layout = point.config, Layout(Path(directory))
    link_directory(layout.prepared_dir, Path(prepared))
    link_directory(layout.checkpoint_dir("warmup"), Path(warmup))
    client = MlflowClient(tracking_uri=uri)
    with point_run(client, parent_run_id=parent_run_id, point=point.name) as run_id:
        cpu_started = _cpu_seconds()
        run_train(config, layout)
        train_cpu_seconds = _cpu_seconds() - cpu_started
        evaluation = run_evaluate(point.judged, layout)
        verdict = run_gate(point.judged, layout)
        _log_point(client, run_id=run_id, config=config, evaluation=evaluation, verdict=verdict)
        client.log_artifact(run_id, str(layout.report_file), "reports")
        client.log_artifact(run_id, str(layout.metrics_file("evaluate")), "metrics")
    trained = json.loads(layout.metrics_file("train").read_text())
    return {
        "point": point.name,
        "model": config.model.name,
        "eps": config.train.eps,
        "method": config.train.method,
        "steps": config.train.steps,
        "lr": config.train.lr,
        "width": config.model.width,
        "budget_minutes": config.train.budget_minutes,
        "seed": config.seed,
        "clean_accuracy": evaluation["clean_accuracy"],
        "robust_accuracy": evaluation["robust_accuracy"],
        "natural_clean_accuracy": evaluation["natural"]["clean_accuracy"],
        "trust_flags": len(evaluation["flags"]),
        "gate": "passed" if verdict["passed"] else "failed",
        # Trained, not decided: a budget's limit or a collapse can stop before the last.
        "epochs": trained.get("last_epoch", trained.get("epochs")),
        "train_seconds": round(trained["seconds"], 1) if "seconds" in trained else None,
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "minutes": round((time.time() - started) / 60, 2),
        "run_id": run_id,
    }


def _cpu_seconds() -> float:
    """CPU time of this process (every thread: torch's too) and of its finished children (the
    data loader's workers, the DDP processes of ``train.nproc``). A point runs alone in its
    process (the local runner runs one at a time; a Dask worker has one thread), so the
    difference around the train stage is the CPU time of that stage."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _log_point(
    client: MlflowClient, *, run_id: str, config: Config, evaluation: dict, verdict: dict
) -> None:
    """The point's params (without the sweep's own lists) and its evaluation's figures."""
    params = flatten(config.to_dict())
    client.log_batch(
        run_id,
        params=[
            Param(key, str(value)) for key, value in params.items() if not key.startswith("sweep.")
        ],
    )
    figures, skipped = finite_metrics(evaluation_metrics(evaluation, verdict))
    for key, value in figures.items():
        client.log_metric(run_id, key, value)
    if skipped:
        client.set_tag(run_id, SKIPPED_TAG, ", ".join(skipped)[:5000])
