"""End to end: ``iocane run`` on the user's own image folder (``data.dataset: folder``), from
real PNG and JPEG files to a registered version whose tags and model card name the classes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from iocane.base.layout import Layout
from tests.helpers.image_folder import write_folder, write_image
from tests.helpers.pipeline_params import run_iocane, write_tiny_params
from tests.helpers.prefect_homes import seeded_home
from tests.helpers.registry_files import copy_registry


# One library model through the whole run (the suite's time: a run costs about a minute); timm's
# models take the same path (models/sources.py) and train, save and load in tests/unit/models.
@pytest.mark.parametrize("model", ["torchvision:resnet18"])
def test_run_on_an_image_folder_registers_its_classes(
    tmp_path: Path, model: str, prefect_home_template: Path, empty_registry: Path
) -> None:
    """The user's images and a model of a library iocane does not own, through ``iocane run``."""
    images = tmp_path / "images"
    write_folder(images / "train", classes=("tabby", "beagle"), per_class=20, size=(20, 24))
    write_folder(images / "test", classes=("tabby", "beagle"), per_class=6, suffix=".jpg")
    write_image(images / "test" / "beagle" / "gray.png", np.full((30, 30), 90, dtype=np.uint8))
    project = tmp_path / "project"
    project.mkdir()
    params = write_tiny_params(
        project / "params.yaml",
        data={"dataset": "folder", "root": str(images), "limit_train": 0, "image_size": 16},
        model={"name": model},
        warmup={"epochs": 1},
        train={"epochs": 1, "eps_ramp_epochs": 0},
        evaluate={"n_samples": 13},
    )
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": copy_registry(empty_registry, project),
        "PREFECT_HOME": seeded_home(prefect_home_template, project / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(project / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    completed = run_iocane(project, env, "run", "--params", str(params))
    assert completed.returncode in (0, 3), completed.stderr[-3000:]

    meta = json.loads(Layout(project).prepared_meta.read_text())
    assert meta["dataset"] == "folder" and meta["class_names"] == ["beagle", "tabby"]
    assert meta["in_channels"] == 3 and meta["image_size"] == 16
    assert meta["counts"] == {"train": 36, "val": 4, "test": 13} and meta["skipped_images"] == 0
    number = json.loads(completed.stdout)["version"]
    version = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_model_version("iocane-test", number)
    assert version.tags["class_names"] == "beagle, tabby"
    assert version.tags["dataset"] == "folder"
    card = Layout(project).model_card_file.read_text()
    assert "Classes, by label: beagle, tabby." in card
    assert json.loads(version.tags["params"])["model"]["name"] == model
