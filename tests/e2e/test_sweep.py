"""The sweep flow: the grid, the Pareto front, and a tiny grid on a real local Dask cluster."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.sweep import grid, pareto_front
from iocane.config import load_config
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.pipeline_params import write_tiny_params


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


def test_a_tiny_grid_on_a_local_dask_cluster(tmp_path: Path) -> None:
    write_tiny_params(
        tmp_path / "params.yaml",
        warmup={"epochs": 1},
        train={"epochs": 1, "eps_ramp_epochs": 0},
        evaluate={"n_samples": 60},
        sweep={"eps": [0.05, 0.1], "runner": "dask", "workers": 2},
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "iocane.cli", "sweep"],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": str(tmp_path / ".prefect")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed.scheduler" in result.stderr, "the points ran on the Dask cluster"
    summary = json.loads(result.stdout)
    assert [row["eps"] for row in summary["points"]] == [0.05, 0.1]
    assert summary["pareto"] and set(summary["pareto"]) <= {r["point"] for r in summary["points"]}

    directory = Path(summary["directory"])
    with (directory / "summary.csv").open() as stream:
        assert len(list(csv.DictReader(stream))) == 2
    assert (directory / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    for row in summary["points"]:  # judged at the params' threat model, not the training eps
        metrics = directory / row["point"] / "metrics" / "evaluate.json"
        evaluation = json.loads(metrics.read_text())
        assert evaluation["eps"] == pytest.approx(0.1)

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(summary["mlflow_run"])
    assert parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "summary.csv",
        "pareto.png",
    }
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(run.data.params["train.eps"] for run in children) == ["0.05", "0.1"]
    assert all("robust_accuracy" in run.data.metrics for run in children)
    assert client.search_model_versions("name='iocane-test'") == [], "a sweep registers nothing"
