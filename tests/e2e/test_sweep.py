"""The sweep flow: a tiny grid on a real local Dask cluster, through ``iocane sweep``.

The engine's parts are tested in tests/unit: the grid, Pareto front and ranking in
pipeline/test_sweep.py, the summary in reports/test_sweep_summary.py, the MLflow runs in
registry/test_sweep_runs.py."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers.pipeline_params import write_tiny_params
from tests.helpers.prefect_homes import seeded_home
from tests.helpers.registry_files import copy_registry


def test_a_tiny_grid_on_a_local_dask_cluster(
    tmp_path: Path, prefect_home_template: Path, empty_registry: Path
) -> None:
    write_tiny_params(
        tmp_path / "params.yaml",
        warmup={"epochs": 1},
        train={"epochs": 1, "eps_ramp_epochs": 0},
        evaluate={"n_samples": 60},
        sweep={"eps": [0.05, 0.1], "runner": "dask", "workers": 2},
    )
    uri = copy_registry(empty_registry, tmp_path)
    home = seeded_home(prefect_home_template, tmp_path / ".prefect")
    result = subprocess.run(
        [sys.executable, "-m", "iocane.cli", "sweep"],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": home},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed.scheduler" in result.stderr, "the points ran on the Dask cluster"
    summary = json.loads(result.stdout)
    assert [row["eps"] for row in summary["points"]] == [0.05, 0.1]
    assert summary["pareto"] and set(summary["pareto"]) <= {r["point"] for r in summary["points"]}
    for row in summary["points"]:  # ranked, or saying why not; the train stage's own times
        assert (row["rank"] is None) == bool(row["unranked_because"])
        assert row["train_seconds"] > 0 and row["train_cpu_seconds"] > 0 and row["epochs"] == 1

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
    assert parent.data.tags["iocane.sweep_best"] == (summary["best"] or "none")
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
