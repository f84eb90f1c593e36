"""The ``sweep`` flow: a grid of hardening runs (eps, method, model width, seed) as Prefect
tasks on the runner params.yaml names, each point a nested MLflow run, ending in a summary table
and the clean-versus-robust plot with its Pareto front.

Every point is judged at the same threat model, the params' ``train.norm`` and ``train.eps``,
whatever eps it trained at: robust accuracies at different eps cannot be compared, and their
Pareto front would mean nothing. The points train and evaluate exactly as ``iocane run`` does
(the same stage functions), each in its own directory under ``sweeps/<sweep id>/``, beside links
to a snapshot of the project's prepared data and to the natural warmup of its width and seed
(trained once per width and seed, not per point). Points are compared, not promoted: nothing is
registered. Register a point's settings with ``iocane run --set ...``.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import itertools
import os
import shutil
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Param
from prefect import flow, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from iocane.config import Config, ConfigError, SweepConfig, load_config
from iocane.files import write_atomic, write_text
from iocane.layout import Layout
from iocane.locks import project_lock
from iocane.registry.attempts import experiment_id
from iocane.registry.tracking import evaluation_metrics, flatten, tracking_uri
from tasks.evaluate import run_evaluate
from tasks.gate import run_gate
from tasks.prefect_tasks import prepare_task, run_stage
from tasks.train import run_train
from tasks.warmup import run_warmup

SUMMARY_COLUMNS = (
    "point",
    "eps",
    "method",
    "width",
    "seed",
    "clean_accuracy",
    "robust_accuracy",
    "natural_clean_accuracy",
    "trust_flags",
    "gate",
    "pareto",
    "minutes",
    "run_id",
)


@dataclasses.dataclass(frozen=True)
class Point:
    name: str
    config: Config  # how this point trains

    @property
    def judged(self) -> Config:
        """How it is evaluated: at the sweep's threat model (params' train.norm and train.eps),
        whatever eps it trained at, so that every point's robust accuracy means the same."""
        return (
            self.config
            if self.threat_eps is None
            else dataclasses.replace(
                self.config, train=dataclasses.replace(self.config.train, eps=self.threat_eps)
            )
        )

    threat_eps: float | None = None


def grid(config: Config) -> list[Point]:
    """Every combination of the sweep's lists; an empty list keeps the params' own value."""
    sweep = config.sweep
    axes = itertools.product(
        sweep.eps or (config.train.eps,),
        sweep.method or (config.train.method,),
        sweep.width or (config.model.width,),
        sweep.seed or (config.seed,),
    )
    points = []
    for eps, method, width, seed in axes:
        point = dataclasses.replace(
            config,
            seed=seed,
            train=dataclasses.replace(config.train, eps=eps, method=method),
            model=dataclasses.replace(config.model, width=width),
        )
        points.append(Point(f"eps{eps:g}-{method}-w{width}-s{seed}", point, config.train.eps))
    return points


def pareto_front(rows: list[dict]) -> set[str]:
    """Points no other point beats in both clean and robust accuracy. Points whose evaluation
    raised trust flags take no part: their robust accuracy is not trusted."""
    trusted = [row for row in rows if not row["trust_flags"]]

    def dominated(row: dict) -> bool:
        return any(
            other["clean_accuracy"] >= row["clean_accuracy"]
            and other["robust_accuracy"] >= row["robust_accuracy"]
            and (
                other["clean_accuracy"] > row["clean_accuracy"]
                or other["robust_accuracy"] > row["robust_accuracy"]
            )
            for other in trusted
        )

    return {row["point"] for row in trusted if not dominated(row)}


def task_runner(sweep: SweepConfig) -> TaskRunner:
    """Local: one point at a time in this process. Dask: the cluster at ``address``, or a local
    cluster of ``workers`` processes. Ray: the cluster at ``address``, or a local one."""
    if sweep.runner == "local":
        return ThreadPoolTaskRunner(max_workers=1)
    if sweep.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if sweep.address:
            return DaskTaskRunner(address=sweep.address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": sweep.workers, "threads_per_worker": 1, "processes": True}
        )
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise ConfigError("sweep.runner: ray needs prefect-ray (pip install prefect-ray)") from None
    return RayTaskRunner(address=sweep.address) if sweep.address else RayTaskRunner()


def snapshot(source: Path, destination: Path) -> Path:
    """The prepared data as it is now, for the whole sweep: hard links (no copy), which keep
    the old contents when a later ``iocane run`` replaces the project's files (writes are
    renames); a copy where links cannot be made."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        try:
            os.link(path, destination / path.name)
        except OSError:
            shutil.copy2(path, destination / path.name)
    return destination


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(target.resolve(), target_is_directory=True)


@task(name="sweep-warmup", cache_policy=NO_CACHE)
def warmup_for(config: Config, directory: str, prepared: str) -> str:
    """The natural warmup of one width and seed, shared by the points that have them."""
    layout = Layout(Path(directory))
    _link(layout.prepared_dir, Path(prepared))
    run_warmup(config, layout)
    return str(layout.checkpoint_dir("warmup"))


@task(name="sweep-point", cache_policy=NO_CACHE)
def run_point(
    point: Point, directory: str, prepared: str, warmup: str, parent_run_id: str, uri: str
) -> dict:
    """Train one point and judge it at the sweep's threat model; its nested MLflow run holds its
    params, figures and report."""
    started = time.time()
    config, layout = point.config, Layout(Path(directory))
    _link(layout.prepared_dir, Path(prepared))
    _link(layout.checkpoint_dir("warmup"), Path(warmup))
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_run_id)
    run = client.create_run(
        parent.info.experiment_id,
        run_name=point.name,
        tags={"mlflow.parentRunId": parent_run_id, "iocane.sweep_point": point.name},
    )
    run_id = run.info.run_id
    try:
        run_train(config, layout)
        evaluation = run_evaluate(point.judged, layout)
        verdict = run_gate(point.judged, layout)
        params = flatten(config.to_dict())
        client.log_batch(
            run_id,
            params=[
                Param(key, str(value))
                for key, value in params.items()
                if not key.startswith("sweep.")
            ],
        )
        for key, value in evaluation_metrics(evaluation, verdict).items():
            client.log_metric(run_id, key, value)
        client.log_artifact(run_id, str(layout.report_file), "reports")
        client.log_artifact(run_id, str(layout.metrics_file("evaluate")), "metrics")
    except BaseException as error:
        client.set_tag(run_id, "iocane.outcome", f"failed: {type(error).__name__}: {error}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return {
        "point": point.name,
        "eps": config.train.eps,
        "method": config.train.method,
        "width": config.model.width,
        "seed": config.seed,
        "clean_accuracy": evaluation["clean_accuracy"],
        "robust_accuracy": evaluation["robust_accuracy"],
        "natural_clean_accuracy": evaluation["natural"]["clean_accuracy"],
        "trust_flags": len(evaluation["flags"]),
        "gate": "passed" if verdict["passed"] else "failed",
        "minutes": round((time.time() - started) / 60, 2),
        "run_id": run_id,
    }


def summary_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def summary_markdown(rows: list[dict], threat: str) -> str:
    lines = [
        f"## Sweep: {len(rows)} points, {threat}",
        "",
        "| point | clean | robust (worst case) | flags | gate | Pareto |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: -r["robust_accuracy"]):
        lines.append(
            f"| {row['point']} | {row['clean_accuracy']:.4f} | {row['robust_accuracy']:.4f} | "
            f"{row['trust_flags']} | {row['gate']} | {'yes' if row['pareto'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def plot_front(rows: list[dict], path: Path, threat: str) -> None:
    """Robust against clean accuracy, one dot per point, the Pareto front joined."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8))
    axis = figure.subplots()
    for row in rows:
        marker = "x" if row["trust_flags"] else "o"
        axis.scatter(row["clean_accuracy"], row["robust_accuracy"], marker=marker, color="C0")
        axis.annotate(row["point"], (row["clean_accuracy"], row["robust_accuracy"]), fontsize=7)
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["clean_accuracy"])
    axis.plot(
        [r["clean_accuracy"] for r in front],
        [r["robust_accuracy"] for r in front],
        "-",
        color="C1",
        label="Pareto front (trusted points)",
    )
    axis.set_xlabel("clean accuracy")
    axis.set_ylabel(f"robust accuracy (worst case, {threat})")
    axis.set_title("Sweep: clean against robust accuracy (x: trust flags)")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left")
    figure.tight_layout()
    write_atomic(path, lambda stream: figure.savefig(stream, dpi=110, format="png"))


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
    parent = client.create_run(
        experiment_id(client, config.registry.model_name),
        run_name=sweep_id,
        tags={"iocane.sweep": sweep_id, "iocane.sweep_points": str(len(points))},
    )
    threat = f"{config.train.norm} eps {config.train.eps:g}"
    try:
        with project_lock(layout.run_lock, "iocane sweep"):
            run_stage(prepare_task, config, layout)
            prepared = str(snapshot(layout.prepared_dir, directory / "data" / "prepared"))
        warmups = {}
        for point in points:
            key = (point.config.model.width, point.config.seed)
            if key not in warmups:
                warmups[key] = warmup_for.submit(
                    point.config, str(directory / f"warmup-w{key[0]}-s{key[1]}"), prepared
                )
        # Wait for the warmups here and hand the points plain paths: a point that took the
        # warmup's future as an argument would be pinned by Dask to the worker holding it.
        warmup_dirs = {key: future.result() for key, future in warmups.items()}
        futures = [
            run_point.submit(
                point,
                str(directory / point.name),
                prepared,
                warmup_dirs[(point.config.model.width, point.config.seed)],
                parent.info.run_id,
                uri,
            )
            for point in points
        ]
        rows = [future.result() for future in futures]
        front = pareto_front(rows)
        for row in rows:
            row["pareto"] = row["point"] in front
        write_text(directory / "summary.csv", summary_csv(rows))
        markdown = summary_markdown(rows, threat)
        write_text(directory / "summary.md", markdown)
        plot_front(rows, directory / "pareto.png", threat)
        for name in ("summary.csv", "summary.md", "pareto.png"):
            client.log_artifact(parent.info.run_id, str(directory / name))
        create_markdown_artifact(key="sweep-summary", markdown=markdown)
        png = base64.b64encode((directory / "pareto.png").read_bytes()).decode("ascii")
        create_image_artifact(image_url=f"data:image/png;base64,{png}", key="sweep-pareto")
    except BaseException as error:
        client.set_tag(parent.info.run_id, "iocane.outcome", f"{type(error).__name__}: {error}")
        client.set_terminated(parent.info.run_id, "FAILED")
        raise
    client.set_terminated(parent.info.run_id, "FINISHED")
    return {
        "sweep": sweep_id,
        "directory": str(directory),
        "mlflow_run": parent.info.run_id,
        "points": rows,
        "pareto": sorted(front),
    }
