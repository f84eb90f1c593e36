"""The hardened model as MLflow logs it (``iocane.registry.logged_model``, which saves it with
``iocane.model_files.log_servable``): a pt2 program with the
``python_function`` flavour (what ``mlflow models serve`` needs), a tensor signature, and real
images as its input example. ``tests/e2e/test_flow.py`` serves a registered champion."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from iocane.data.prepared import PreparedData, Split
from iocane.model_files import model_signature
from iocane.registry.logged_model import EXAMPLE_IMAGES, example_images, log_servable_model
from models import ModelSpec, build_model

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=4)


def _split(pixels: torch.Tensor) -> Split:
    return Split(pixels, torch.zeros(len(pixels), dtype=torch.int64))


def _data(test: int, val: int = 5) -> PreparedData:
    """uint8 images, as prepare stores every dataset but digits: each split its own value."""

    def images(count: int, value: int) -> torch.Tensor:
        return torch.full((count, 1, 8, 8), value, dtype=torch.uint8)

    return PreparedData(
        _split(images(20, 50)), _split(images(val, 100)), _split(images(test, 255)), {}
    )


def test_the_example_is_test_images_in_unit_range_topped_up_from_validation() -> None:
    full = example_images(_data(test=7))
    assert full.dtype == np.float32 and full.shape == (EXAMPLE_IMAGES, 1, 8, 8)
    assert np.all(full == 1.0)  # the test split's 255, scaled to [0, 1]
    short = example_images(_data(test=1))
    assert short.shape == (EXAMPLE_IMAGES, 1, 8, 8)
    assert short[0].max() == 1.0 and short[1].max() == pytest.approx(100 / 255)


def test_the_signature_is_images_in_and_logits_out() -> None:
    signature = model_signature(ModelSpec("small_cnn", 3, 32, 7, (0.5,) * 3, (0.2,) * 3))
    (images,), (logits,) = signature.inputs.inputs, signature.outputs.inputs
    assert (images.type, images.shape) == (np.dtype(np.float32), (-1, 3, 32, 32))
    assert (logits.type, logits.shape) == (np.dtype(np.float32), (-1, 7))


def test_the_logged_model_is_servable_and_predicts_any_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    data = _data(test=3)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("logged", artifact_location=str(tmp_path / "art"))
        with mlflow.start_run(experiment_id=experiment):
            info = log_servable_model(model, SPEC, data)
        pyfunc = mlflow.pyfunc.load_model(info.model_uri)
        exported = mlflow.pytorch.load_model(info.model_uri)
    finally:
        mlflow.set_tracking_uri(previous)
    assert {"python_function", "pytorch"} <= set(info.flavors)
    assert info.signature == model_signature(SPEC)
    assert info.saved_input_example_info["type"] == "ndarray"
    images = torch.rand(5, 1, 8, 8)  # not the example's batch size of 2: the batch is free
    with torch.no_grad():
        expected = model(images)
        torch.testing.assert_close(exported(images), expected)
    predicted = pyfunc.predict(images.numpy())
    torch.testing.assert_close(torch.from_numpy(predicted), expected)
