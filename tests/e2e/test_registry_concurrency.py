"""Two runs registering into one registry at the same moment: distinct versions, and aliases
that agree with the rules afterwards (the more robust version is champion)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from iocane.base.config import load_config
from iocane.base.layout import Layout
from iocane.registry.aliases import champion_stack
from iocane.stages import stage_function
from tests.helpers.pipeline_params import write_tiny_params


def _evaluated_projects(tmp_path: Path) -> list[Path]:
    """Two projects that have run every stage up to the gate: one pipeline run (in this
    process), copied, with the copy's evaluation made less robust, as a second run with
    another result would be."""
    first = tmp_path / "run-a"
    first.mkdir()
    config = load_config(write_tiny_params(first / "params.yaml"), [])
    for stage in ("prepare", "warmup", "train", "evaluate", "gate"):
        stage_function(stage)(config, Layout(first))
    second = tmp_path / "run-b"
    shutil.copytree(first, second)
    evaluation_file = second / "metrics" / "evaluate.json"
    evaluation = json.loads(evaluation_file.read_text())
    evaluation["robust_accuracy"] = max(0.0, evaluation["robust_accuracy"] - 0.02)
    evaluation_file.write_text(json.dumps(evaluation))
    return [first, second]


def test_two_runs_registering_at_once(tmp_path: Path) -> None:
    projects = _evaluated_projects(tmp_path)
    registry = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry, "IOCANE_USER": "ci"}
    # Create the database first: two processes racing to create MLflow's tables is a
    # different problem (one-time set-up), not the one under test.
    MlflowClient(tracking_uri=registry).search_registered_models()

    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "iocane.stages", "register"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for project in projects
    ]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    registrations = [
        json.loads((project / "reports" / "registration.json").read_text()) for project in projects
    ]
    assert sorted(r["version"] for r in registrations) == ["1", "2"]
    client = MlflowClient(tracking_uri=registry)
    name = registrations[0]["name"]
    robust = {
        r["version"]: float(client.get_model_version(name, r["version"]).tags["robust_accuracy"])
        for r in registrations
    }
    aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    champion = aliases["champion"]
    # Whichever registered first, the rules leave the more robust version champion, and the
    # champion history agrees with the alias.
    assert robust[champion] == max(robust.values())
    assert champion_stack(client, name)[-1] == champion
    assert aliases.get("challenger") != champion
