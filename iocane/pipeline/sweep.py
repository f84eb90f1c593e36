"""The sweep's engine: the grid of points (eps, method, PGD steps, learning rate, model and
width, training budget, seed), the ranking (most robust above a clean-accuracy floor) and the
Pareto front of clean against robust accuracy, the Prefect task runner the params name, the
snapshot of the prepared data the points share, the summary table, and the MLflow runs (a parent
run for the sweep, a nested run per point) that record it. ``flows/sweep.py`` wires these
together.

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
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from iocane.base.config import Config, ConfigError, SweepConfig, replace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from prefect.task_runners import TaskRunner

SUMMARY_COLUMNS = (
    "rank",
    "point",
    "model",
    "eps",
    "method",
    "steps",
    "lr",
    "width",
    "budget_minutes",
    "seed",
    "clean_accuracy",
    "robust_accuracy",
    "natural_clean_accuracy",
    "trust_flags",
    "gate",
    "pareto",
    "unranked_because",
    "epochs",
    "train_seconds",
    "train_cpu_seconds",
    "minutes",
    "run_id",
)

# A warmup is shared by the points with the same model, width and seed.
WarmupKey = tuple[str, int, int]


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
    def warmup_key(self) -> WarmupKey:
        """(model name, width, seed): the points that share a natural warmup."""
        return (self.config.model.name, self.config.model.width, self.config.seed)


def slug(text: str) -> str:
    """`text` as a directory name: ``torchvision:resnet18`` becomes ``torchvision_resnet18``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def warmup_directory(key: WarmupKey) -> str:
    """The name of the directory a warmup trains in, under the sweep's."""
    model, width, seed = key
    return f"warmup-{slug(model)}-w{width}-s{seed}"


def _capacities(config: Config) -> list[tuple[str, int]]:
    """(model name, width) pairs: the model axis crossed with the width axis. Widths apply to
    iocane's own models only; a ``torchvision:``, ``timm:`` or your own model takes width 0."""
    sweep = config.sweep
    pairs: list[tuple[str, int]] = []
    for name in sweep.model or (config.model.name,):
        own = ":" not in name
        for width in (sweep.width or (config.model.width,)) if own else (0,):
            if (name, width) not in pairs:
                pairs.append((name, width))
    return pairs


def _point_name(config: Config, swept: SweepConfig) -> str:
    """eps, method and width and seed, as before the model, steps, lr and budget axes; each of
    those is in the name only when the sweep varies it, so older sweeps keep their names."""
    train, model = config.train, config.model
    parts = [slug(model.name)] if swept.model else []
    parts += [f"eps{train.eps:g}", train.method]
    parts += [f"k{train.steps}"] if swept.steps else []
    parts += [f"lr{train.lr:g}"] if swept.lr else []
    parts += [f"w{model.width}"]
    parts += [f"b{train.budget_minutes:g}m"] if swept.budget_minutes else []
    return "-".join([*parts, f"s{config.seed}"])


def grid(config: Config) -> list[Point]:
    """Every combination of the sweep's lists; an empty list keeps the params' own value. A
    swept ``steps`` sets ``train.step_size`` to 2.5 * eps / steps (Madry et al.'s rule), so
    fewer steps take larger ones."""
    sweep = config.sweep
    axes = itertools.product(  # in the order of the original four axes: eps, method, width, seed
        sweep.eps or (config.train.eps,),
        sweep.method or (config.train.method,),
        sweep.steps or (None,),
        sweep.lr or (config.train.lr,),
        _capacities(config),
        sweep.budget_minutes or (config.train.budget_minutes,),
        sweep.seed or (config.seed,),
    )
    points = []
    for eps, method, steps, lr, (name, width), budget, seed in axes:
        train = {"eps": eps, "method": method, "lr": lr, "budget_minutes": budget}
        if steps is not None:
            train.update(steps=steps, step_size=2.5 * eps / steps)
        point = replace(
            config,
            seed=seed,
            train=replace(config.train, **train),
            model=replace(config.model, name=name, width=width),
        )
        points.append(Point(_point_name(point, sweep), point, config.train.eps))
    return points


def warmups(points: list[Point]) -> dict[WarmupKey, Config]:
    """The natural warmups the points need, one per model, width and seed (not per point),
    each trained with the config of the first point that has them."""
    needed: dict[WarmupKey, Config] = {}
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


def min_clean_accuracy(config: Config) -> float:
    """The ranking's clean floor: ``sweep.min_clean_accuracy``, else the gate's (0 when the
    gate has no absolute floor either)."""
    floor = config.sweep.min_clean_accuracy
    if floor is None:
        floor = config.gate.min_clean_accuracy
    return 0.0 if floor is None else floor


def _seconds(row: dict) -> float:
    """A point's training time for breaking ties: the train stage's own wall time, else the
    point's whole time."""
    seconds = row.get("train_seconds")
    return seconds if seconds is not None else 60 * row.get("minutes", 0.0)


def rank(rows: list[dict], min_clean: float) -> list[dict]:
    """Set each row's ``rank`` (1 = the most robust in the worst case among the points with
    clean accuracy at least ``min_clean`` and no trust flags; ties go to the higher clean
    accuracy, then the shorter training) or say in ``unranked_because`` why it has none.
    Returns the rows ranked first, then the unranked ones, the most robust first."""
    ranked = []
    for row in rows:
        reasons = []
        if row["clean_accuracy"] < min_clean:
            reasons.append(f"clean {row['clean_accuracy']:.4f} < {min_clean:g}")
        if row["trust_flags"]:
            reasons.append(f"{row['trust_flags']} trust flag(s)")
        row["rank"], row["unranked_because"] = None, "; ".join(reasons)
        if not reasons:
            ranked.append(row)
    ranked.sort(key=lambda r: (-r["robust_accuracy"], -r["clean_accuracy"], _seconds(r)))
    for position, row in enumerate(ranked, start=1):
        row["rank"] = position
    unranked = sorted((r for r in rows if r["rank"] is None), key=lambda r: -r["robust_accuracy"])
    return [*ranked, *unranked]


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def summary_markdown(rows: list[dict], threat: str, min_clean: float) -> str:
    """The points as a markdown table in the order of ``rank``: the ranked points first."""
    lines = [
        f"## Sweep: {len(rows)} points, {threat}",
        "",
        f"Ranked by worst-case robust accuracy among the points with clean accuracy "
        f"≥ {min_clean:g} and no trust flags; ties go to clean accuracy, then training time.",
        "",
        "| rank | point | clean | robust (worst case) | epochs | train s | train CPU s "
        "| flags | gate | Pareto | unranked because |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rank(rows, min_clean):
        lines.append(
            f"| {row['rank'] or ''} | {row['point']} | {row['clean_accuracy']:.4f} "
            f"| {row['robust_accuracy']:.4f} | {row.get('epochs') or ''} "
            f"| {_number(row.get('train_seconds'), 1)} "
            f"| {_number(row.get('train_cpu_seconds'), 1)} | {row['trust_flags']} "
            f"| {row['gate']} | {'yes' if row['pareto'] else ''} | {row['unranked_because']} |"
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
