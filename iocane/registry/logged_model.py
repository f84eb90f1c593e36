"""The registered model as others use it: the hardened model logged to MLflow as a servable
``pt2`` program (``iocane.model_files.log_servable``: the format, the signature), with a few real
images of the prepared data as its input example, so a reader of the version, or
``serving_input_example.json`` in its artifacts, shows a real request.
"""

from __future__ import annotations

import numpy as np
import torch
from mlflow.models.model import ModelInfo
from torch import nn

from iocane.data.prepared import PreparedData
from iocane.model_files import log_servable
from models import ModelSpec

# Two images: torch.export keeps the batch dimension dynamic only when the example's is above 1,
# and every image more adds to the example's JSON (a 224x224 RGB image is about 3 MB of it).
EXAMPLE_IMAGES = 2


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
    return log_servable(model, spec, example_images(data))
