"""The registered model as others use it: how the hardened model is logged to MLflow.

It is logged as ``pt2`` (a ``torch.export`` program: no pickled code, read by
``mlflow.pytorch.load_model`` without running any) with MLflow's ``python_function`` flavour, so
that ``mlflow models serve`` serves it. Its signature says what it takes and gives: float32 images
of shape (N, C, H, W) in [0, 1] (the normalisation is inside the model) and logits of shape
(N, classes). Its input example is a few real images of the prepared data, so a reader of the
version, or ``serving_input_example.json`` in its artifacts, shows a real request.

MLflow adds the ``python_function`` flavour to a ``pt2`` model only when the input example is one
numpy array (not a torch tensor, not a tuple): that is why the example is numpy.
"""

from __future__ import annotations

import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.pytorch import log_model
from mlflow.types import Schema, TensorSpec
from torch import nn

from iocane.data.prepared import PreparedData
from models import ModelSpec

# Two images: torch.export keeps the batch dimension dynamic only when the example's is above 1,
# and every image more adds to the example's JSON (a 224x224 RGB image is about 3 MB of it).
EXAMPLE_IMAGES = 2


def model_signature(spec: ModelSpec) -> ModelSignature:
    """float32 images (N, C, H, W) in [0, 1] -> float32 logits (N, classes)."""
    images = TensorSpec(
        np.dtype(np.float32), (-1, spec.in_channels, spec.image_size, spec.image_size)
    )
    logits = TensorSpec(np.dtype(np.float32), (-1, spec.num_classes))
    return ModelSignature(inputs=Schema([images]), outputs=Schema([logits]))


def example_images(data: PreparedData) -> np.ndarray:
    """The first ``EXAMPLE_IMAGES`` test images as float32 in [0, 1], topped up from the
    validation and training splits when the test split is smaller."""
    parts: list[torch.Tensor] = []
    missing = EXAMPLE_IMAGES
    for split in (data.test, data.val, data.train):
        if missing == 0:
            break
        taken = split.batch(slice(0, missing))
        parts.append(taken)
        missing -= len(taken)
    return torch.cat(parts).numpy().astype(np.float32, copy=False)


def log_servable_model(model: nn.Module, spec: ModelSpec, data: PreparedData) -> ModelInfo:
    """Log ``model`` into the active run as ``model``: pt2, signature, real input example."""
    return log_model(
        model,
        name="model",
        input_example=example_images(data),
        signature=model_signature(spec),
        serialization_format="pt2",
        # A torch.export program needs torch alone. Stated, because MLflow's inference loads
        # the model in a subprocess to find out (10-20 s per version on two cores).
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )
