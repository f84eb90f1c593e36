"""The model as others use it: logged to MLflow as ``pt2`` (a ``torch.export`` program: no
pickled code, read by ``mlflow.pytorch.load_model`` without running any) with MLflow's
``python_function`` flavour, so that ``mlflow models serve`` serves it.

Its signature says what it takes and gives: float32 images of shape (N, C, H, W) in [0, 1] (the
normalisation is inside the model) and logits of shape (N, classes). The input example is the
caller's (``iocane.registry.logged_model`` takes real images of the prepared data).

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

from models import ModelSpec


def model_signature(spec: ModelSpec) -> ModelSignature:
    """float32 images (N, C, H, W) in [0, 1] -> float32 logits (N, classes)."""
    images = TensorSpec(
        np.dtype(np.float32), (-1, spec.in_channels, spec.image_size, spec.image_size)
    )
    logits = TensorSpec(np.dtype(np.float32), (-1, spec.num_classes))
    return ModelSignature(inputs=Schema([images]), outputs=Schema([logits]))


def log_servable(model: nn.Module, spec: ModelSpec, example: np.ndarray) -> ModelInfo:
    """Log ``model`` into the active run as ``model``: pt2, signature, the input ``example``
    (float32 images; more than one, so that torch.export keeps the batch dimension dynamic)."""
    return log_model(
        model,
        name="model",
        input_example=example,
        signature=model_signature(spec),
        serialization_format="pt2",
        # A torch.export program needs torch alone. Stated, because MLflow's inference loads
        # the model in a subprocess to find out (10-20 s per version on two cores).
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )
