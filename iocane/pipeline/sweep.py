"""The sweep's engine: the grid of points (eps, method, model width, seed), the Pareto front of
clean against robust accuracy, the Prefect task runner the params name, the snapshot of the
prepared data the points share, the summary table, and the MLflow runs (a parent run for the
sweep, a nested run per point) that record it. ``flows/sweep.py`` wires these together.

Every point is judged at the same threat model, the params' ``train.norm`` and ``train.eps``,
whatever eps it trained at: robust accuracies at different eps cannot be compared, and their
Pareto front would mean nothing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from iocane.config import Config, ConfigError, SweepConfig, replace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from prefect.task_runners import TaskRunner

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
    """One point of the grid: its name, how it trains, and the eps it is judged at."""

    name: str
    config: Config  # how this point trains
    threat_eps: float | None = None

    @property
    def judged(self) -> Config:
        """How it is evaluated: at the sweep's threat model (params' train.norm and train.eps),
        whatever eps it trained at, so that every point's robust accuracy means the same."""
        return (
            self.config
            if self.threat_eps is None
            else replace(self.config, train=replace(self.config.train, eps=self.threat_eps))
        )

    @property
    def warmup_key(self) -> tuple[int, int]:
        """(width, seed): the points that share a natural warmup."""
        return (self.config.model.width, self.config.seed)


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
        point = replace(
            config,
            seed=seed,
            train=replace(config.train, eps=eps, method=method),
            model=replace(config.model, width=width),
        )
        points.append(Point(f"eps{eps:g}-{method}-w{width}-s{seed}", point, config.train.eps))
    return points


def warmups(points: list[Point]) -> dict[tuple[int, int], Config]:
    """The natural warmups the points need, one per width and seed (not per point), each
    trained with the config of the first point that has them."""
    needed: dict[tuple[int, int], Config] = {}
    for point in points:
        needed.setdefault(point.warmup_key, point.config)
    return needed


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


def mark_pareto(rows: list[dict]) -> set[str]:
    """Set each row's ``pareto`` column; returns the front."""
    front = pareto_front(rows)
    for row in rows:
        row["pareto"] = row["point"] in front
    return front


def task_runner(sweep: SweepConfig) -> TaskRunner:
    """Local: one point at a time in this process. Dask: the cluster at ``address``, or a local
    cluster of ``workers`` processes. Ray: the cluster at ``address``, or a local one."""
    if sweep.runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

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


def link_directory(link: Path, target: Path) -> None:
    """A symlink at `link` to the directory `target` (kept if one is there already): a point's
    layout reaches the sweep's shared data and warmup without copying them."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(target.resolve(), target_is_directory=True)


def summary_csv(rows: list[dict]) -> str:
    """The points as CSV, one row each, in the columns of ``SUMMARY_COLUMNS``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def summary_markdown(rows: list[dict], threat: str) -> str:
    """The points as a markdown table, the most robust first."""
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


@contextlib.contextmanager
def sweep_run(
    client: MlflowClient, *, experiment_id: str, sweep_id: str, points: int
) -> Iterator[str]:
    """The sweep's parent MLflow run (yields its id): FINISHED when the block ends, FAILED with
    the error in the tag ``iocane.outcome`` when it raises."""
    run_id = client.create_run(
        experiment_id,
        run_name=sweep_id,
        tags={"iocane.sweep": sweep_id, "iocane.sweep_points": str(points)},
    ).info.run_id
    try:
        yield run_id
    except BaseException as error:
        client.set_tag(run_id, "iocane.outcome", f"{type(error).__name__}: {error}")
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


@contextlib.contextmanager
def point_run(client: MlflowClient, *, parent_run_id: str, point: str) -> Iterator[str]:
    """A point's MLflow run, nested in the sweep's (yields its id): FINISHED when the block
    ends, FAILED with the error in the tag ``iocane.outcome`` when it raises."""
    parent = client.get_run(parent_run_id)
    run_id = client.create_run(
        parent.info.experiment_id,
        run_name=point,
        tags={"mlflow.parentRunId": parent_run_id, "iocane.sweep_point": point},
    ).info.run_id
    try:
        yield run_id
    except BaseException as error:
        client.set_tag(run_id, "iocane.outcome", f"failed: {type(error).__name__}: {error}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
