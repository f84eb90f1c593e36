"""The sweep's summary (iocane.reports.sweep_summary and its stage, tasks.sweep_summary): the CSV
and markdown tables, the files written in the sweep's directory, and the ranking and files
recorded on the sweep's MLflow run (a real sqlite tracking store)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from mlflow import MlflowClient

from iocane.base.config import load_config
from iocane.pipeline.sweep.pareto import mark_pareto
from iocane.pipeline.sweep.ranking import rank
from iocane.reports.sweep_summary import (
    SUMMARY_COLUMNS,
    SUMMARY_FILES,
    summary_csv,
    summary_markdown,
)
from tasks.sweep_summary import run_sweep_summary
from tests.helpers.paths import PROJECT_ROOT


def _row(name: str, clean: float, robust: float, flags: int = 0) -> dict:
    return {"point": name, "clean_accuracy": clean, "robust_accuracy": robust, "trust_flags": flags}


def _point_rows() -> list[dict]:
    """Two points' rows as the sweep's points return them: not yet ranked or marked."""
    rows = [_row("a", 0.9, 0.3), _row("b", 0.8, 0.5, flags=2)]
    for row, eps in zip(rows, (0.1, 0.2), strict=True):
        row.update(eps=eps, method="pgd", width=1, seed=0, natural_clean_accuracy=0.95)
        row.update(gate="passed", minutes=0.5, run_id=f"run-{row['point']}")
        row.update(model="madry_cnn", steps=10, lr=0.05, budget_minutes=2.5, epochs=3)
        row.update(train_seconds=25.0, train_cpu_seconds=49.5)
    return rows


def _summary_rows() -> list[dict]:
    rows = _point_rows()
    mark_pareto(rows)
    return rank(rows, 0.5)


def test_summary_csv_has_every_column_and_row() -> None:
    rows = _summary_rows()
    table = list(csv.DictReader(io.StringIO(summary_csv(rows))))
    assert tuple(table[0]) == SUMMARY_COLUMNS
    assert [(r["rank"], r["point"], r["pareto"], r["trust_flags"]) for r in table] == [
        ("1", "a", "True", "0"),
        ("", "b", "False", "2"),
    ]
    assert table[1]["unranked_because"] == "2 trust flag(s)"
    assert (table[0]["budget_minutes"], table[0]["train_cpu_seconds"]) == ("2.5", "49.5")


def test_summary_markdown_puts_the_ranked_first() -> None:
    markdown = summary_markdown(_summary_rows(), "Linf eps 0.1", 0.5)
    lines = markdown.splitlines()
    assert lines[0] == "## Sweep: 2 points, Linf eps 0.1"
    assert "clean accuracy ≥ 0.5" in lines[2]
    assert lines[6] == "| 1 | a | 0.9000 | 0.3000 | 3 | 25.0 | 49.5 | 0 | passed | yes |  |"
    assert lines[7] == (
        "|  | b | 0.8000 | 0.5000 | 3 | 25.0 | 49.5 | 2 | passed |  | 2 trust flag(s) |"
    )


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real sqlite tracking store for the module (creating one takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _sweep_run(uri: str, experiment: str) -> str:
    client = MlflowClient(tracking_uri=uri)
    return client.create_run(client.create_experiment(experiment)).info.run_id


def test_the_summary_stage_writes_the_files_and_records_the_winner(
    tmp_path: Path, tracking: str
) -> None:
    config = load_config(PROJECT_ROOT / "params.yaml", ["sweep.min_clean_accuracy=0.5"])
    uri, run = tracking, _sweep_run(tracking, "a-winner")
    client = MlflowClient(tracking_uri=uri)
    rows = _point_rows()
    summary = run_sweep_summary(config, rows, str(tmp_path / "sweep"), run, uri)

    assert summary == {"points": rows, "pareto": ["a"], "min_clean_accuracy": 0.5, "best": "a"}
    assert [(row["point"], row["rank"], row["pareto"]) for row in rows] == [
        ("a", 1, True),  # the grid's order, each row ranked and marked
        ("b", None, False),
    ]
    threat = f"{config.train.norm} eps {config.train.eps:g}"
    written = {name: (tmp_path / "sweep" / name).read_bytes() for name in SUMMARY_FILES}
    assert written["summary.md"].decode() == summary_markdown(rows, threat, 0.5)
    assert written["summary.csv"].decode() == summary_csv(rank(rows, 0.5))
    assert written["pareto.png"][:4] == b"\x89PNG"

    recorded = client.get_run(run).data
    assert recorded.params == {"sweep.min_clean_accuracy": "0.5"}
    assert recorded.tags["iocane.sweep_best"] == "a"
    assert recorded.metrics == {
        "best_clean_accuracy": 0.9,
        "best_robust_accuracy": 0.3,
        "best_train_seconds": 25.0,
        "best_train_cpu_seconds": 49.5,
    }
    assert {artifact.path for artifact in client.list_artifacts(run)} == set(SUMMARY_FILES)


def test_no_point_above_the_floor_is_recorded_as_none(tmp_path: Path, tracking: str) -> None:
    config = load_config(PROJECT_ROOT / "params.yaml", ["sweep.min_clean_accuracy=0.95"])
    uri, run = tracking, _sweep_run(tracking, "no-winner")
    client = MlflowClient(tracking_uri=uri)
    summary = run_sweep_summary(config, _point_rows(), str(tmp_path / "sweep"), run, uri)
    assert summary["best"] is None and summary["pareto"] == ["a"]
    recorded = client.get_run(run).data
    assert recorded.tags["iocane.sweep_best"] == "none" and recorded.metrics == {}


def test_the_summary_task_keeps_its_name_and_is_never_cached() -> None:
    from prefect.cache_policies import NO_CACHE

    from tasks.prefect_tasks import sweep_summary_task

    assert sweep_summary_task.name == "sweep-summary"
    assert sweep_summary_task.cache_policy is NO_CACHE
