"""End to end: the user's own architecture (``model.name: user_models:tiny_net``, a file in the
project directory) started from the user's weights, through ``iocane run``, registered with its
lineage, then re-evaluated with ``iocane evaluate`` (which rebuilds it from the saved spec)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from iocane.base.files import sha256_file
from tests.helpers import user_models
from tests.helpers.pipeline_params import run_iocane, write_tiny_params
from tests.helpers.prefect_homes import seeded_home
from tests.helpers.registry_files import copy_registry

pytestmark = [pytest.mark.slow]


def test_own_factory_from_own_weights_through_run_and_evaluate(
    tmp_path: Path, prefect_home_template: Path, empty_registry: Path
) -> None:
    project = tmp_path
    shutil.copy(user_models.__file__, project / "user_models.py")
    torch.manual_seed(7)
    weights = project / "mine.pt"
    torch.save(user_models.tiny_net(channels=1, image_size=8, num_classes=10).state_dict(), weights)
    write_tiny_params(
        project / "params.yaml",
        data={"limit_train": 300},
        model={"name": "user_models:tiny_net", "weights": "mine.pt"},
        warmup={"epochs": 0},
        train={"epochs": 1, "eps_ramp_epochs": 0, "steps": 2},
        evaluate={"n_samples": 60, "preset": "quick"},
        gate={"min_clean_accuracy": 0.0, "max_clean_drop": 1.0, "min_robust_accuracy": 0.0},
    )
    env = {
        # Nothing on the Python path holds a user_models module: the project directory does.
        **os.environ,
        "MLFLOW_TRACKING_URI": copy_registry(empty_registry, project),
        "PREFECT_HOME": seeded_home(prefect_home_template, project / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    completed = run_iocane(project, env, "run")
    assert completed.returncode == 0, completed.stderr[-3000:]

    warmup = json.loads((project / "metrics" / "warmup.json").read_text())
    assert warmup["epochs"] == 0
    assert warmup["base_model"] == {"path": "mine.pt", "sha256": sha256_file(weights)}
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    (version,) = client.search_model_versions("name='iocane-test'")
    assert version.tags["base_model"] == f"mine.pt (sha256 {sha256_file(weights)})"
    assert "Hardened from mine.pt" in version.description

    completed = run_iocane(
        project, env, "evaluate", "--model-uri", f"models:/iocane-test/{version.version}"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert 0 <= json.loads(completed.stdout)["clean_accuracy"] <= 1
