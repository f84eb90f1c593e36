"""The sweep's engine (iocane.pipeline.sweep): the grid, the Pareto front, the shared warmups,
the summary, the data snapshot and the MLflow runs' outcomes, without running a point."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

import pytest

from iocane.config import load_config
from iocane.pipeline.sweep import (
    SUMMARY_COLUMNS,
    grid,
    link_directory,
    mark_pareto,
    pareto_front,
    point_run,
    snapshot,
    summary_csv,
    summary_markdown,
    sweep_run,
    warmups,
)
from tests.helpers.paths import PROJECT_ROOT


def test_the_default_grid_is_the_one_point_iocane_run_trains() -> None:
    config = load_config(PROJECT_ROOT / "params.yaml")
    (point,) = grid(config)
    assert point.config == config and point.judged == config


def test_the_grid_is_every_combination_judged_at_one_threat_model() -> None:
    config = load_config(
        PROJECT_ROOT / "params.yaml",
        ["sweep.eps=[0.05, 0.2]", "sweep.method=[pgd, free]", "sweep.width=[1, 2]"],
    )
    points = grid(config)
    assert len(points) == 8 and len({point.name for point in points}) == 8
    assert {point.config.train.eps for point in points} == {0.05, 0.2}
    assert {point.config.model.width for point in points} == {1, 2}
    assert {point.judged.train.eps for point in points} == {config.train.eps}


def test_one_warmup_per_width_and_seed_in_the_order_of_the_points() -> None:
    config = load_config(
        PROJECT_ROOT / "params.yaml",
        ["sweep.eps=[0.05, 0.2]", "sweep.width=[2, 1]", "sweep.seed=[3, 4]"],
    )
    points = grid(config)
    needed = warmups(points)
    assert list(needed) == [(2, 3), (2, 4), (1, 3), (1, 4)]
    for (width, seed), warmup_config in needed.items():
        first = next(point for point in points if point.warmup_key == (width, seed))
        assert warmup_config == first.config
        assert (warmup_config.model.width, warmup_config.seed) == (width, seed)


def _row(name: str, clean: float, robust: float, flags: int = 0) -> dict:
    return {"point": name, "clean_accuracy": clean, "robust_accuracy": robust, "trust_flags": flags}


def test_pareto_front() -> None:
    rows = [
        _row("robust", 0.80, 0.60),
        _row("accurate", 0.95, 0.40),
        _row("dominated", 0.79, 0.55),
        _row("tied-but-worse", 0.80, 0.59),
        _row("flagged", 0.99, 0.99, flags=1),  # its robust accuracy is not trusted
    ]
    assert pareto_front(rows) == {"robust", "accurate"}
    assert mark_pareto(rows) == {"robust", "accurate"}
    assert [row["pareto"] for row in rows] == [True, True, False, False, False]


def _summary_rows() -> list[dict]:
    rows = [_row("a", 0.9, 0.3), _row("b", 0.8, 0.5, flags=2)]
    for row, eps in zip(rows, (0.1, 0.2), strict=True):
        row.update(eps=eps, method="pgd", width=1, seed=0, natural_clean_accuracy=0.95)
        row.update(gate="passed", minutes=0.5, run_id=f"run-{row['point']}")
    mark_pareto(rows)
    return rows


def test_summary_csv_has_every_column_and_row() -> None:
    rows = _summary_rows()
    table = list(csv.DictReader(io.StringIO(summary_csv(rows))))
    assert tuple(table[0]) == SUMMARY_COLUMNS
    assert [(r["point"], r["pareto"], r["trust_flags"]) for r in table] == [
        ("a", "True", "0"),
        ("b", "False", "2"),
    ]


def test_summary_markdown_puts_the_most_robust_first() -> None:
    markdown = summary_markdown(_summary_rows(), "Linf eps 0.1")
    lines = markdown.splitlines()
    assert lines[0] == "## Sweep: 2 points, Linf eps 0.1"
    assert lines[4] == "| b | 0.8000 | 0.5000 | 2 | passed |  |"
    assert lines[5] == "| a | 0.9000 | 0.3000 | 0 | passed | yes |"


def test_the_snapshot_keeps_the_old_data_when_the_project_rewrites_it(tmp_path: Path) -> None:
    source = tmp_path / "prepared"
    source.mkdir()
    (source / "train.npz").write_text("old")
    copy = snapshot(source, tmp_path / "sweep" / "prepared")
    replacement = source / "train.npz.tmp"  # the project's writes are renames
    replacement.write_text("new")
    replacement.replace(source / "train.npz")
    assert (copy / "train.npz").read_text() == "old"

    link = tmp_path / "point" / "data" / "prepared"
    link_directory(link, copy)
    link_directory(link, tmp_path)  # already linked: kept
    assert link.resolve() == copy.resolve() and (link / "train.npz").read_text() == "old"


class FakeClient:
    """What the sweep's runs ask of an MlflowClient, recorded."""

    def __init__(self) -> None:
        self.created: list[dict] = []
        self.tags: dict[tuple[str, str], str] = {}
        self.status: dict[str, str] = {}

    def create_run(self, experiment_id: str, *, run_name: str, tags: dict) -> SimpleNamespace:
        run_id = f"run-{len(self.created)}"
        self.created.append({"experiment": experiment_id, "name": run_name, "tags": tags})
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, experiment_id=experiment_id))

    def get_run(self, run_id: str) -> SimpleNamespace:
        experiment = self.created[int(run_id.removeprefix("run-"))]["experiment"]
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, experiment_id=experiment))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.tags[(run_id, key)] = value

    def set_terminated(self, run_id: str, status: str) -> None:
        self.status[run_id] = status


def test_a_point_runs_nested_in_the_sweep_and_a_failure_is_recorded() -> None:
    client = FakeClient()
    with (
        pytest.raises(RuntimeError, match="no more data"),
        sweep_run(client, experiment_id="7", sweep_id="sweep-1", points=2) as parent,
    ):
        with point_run(client, parent_run_id=parent, point="eps0.1") as first:
            pass
        with point_run(client, parent_run_id=parent, point="eps0.2") as second:
            raise RuntimeError("no more data")
    sweep, *points = client.created
    assert sweep == {
        "experiment": "7",
        "name": "sweep-1",
        "tags": {"iocane.sweep": "sweep-1", "iocane.sweep_points": "2"},
    }
    assert points == [
        {
            "experiment": "7",
            "name": name,
            "tags": {"mlflow.parentRunId": parent, "iocane.sweep_point": name},
        }
        for name in ("eps0.1", "eps0.2")
    ]
    assert client.status == {first: "FINISHED", second: "FAILED", parent: "FAILED"}
    assert client.tags == {
        (second, "iocane.outcome"): "failed: RuntimeError: no more data",
        (parent, "iocane.outcome"): "RuntimeError: no more data",
    }


def test_a_sweep_that_ends_well_is_finished() -> None:
    client = FakeClient()
    with sweep_run(client, experiment_id="7", sweep_id="sweep-1", points=0) as parent:
        pass
    assert client.status == {parent: "FINISHED"} and client.tags == {}
