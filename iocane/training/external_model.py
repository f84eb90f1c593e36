"""A model from outside iocane, loaded in one place for ``iocane evaluate`` (the warmup's
``model.weights`` reads a file's or a URI's weights with the same functions:
``iocane.training.base_model`` and ``iocane.training.mlflow_models``, which this module builds on).

- An MLflow model URI of any PyTorch-flavour model (``models:/NAME@ALIAS``, ``models:/NAME/N``,
  ``runs:/RUN_ID/PATH``), from the project's tracking store, loaded with
  ``mlflow.pytorch.load_model`` on the CPU and then moved to the run-time device. A version that
  iocane registered is read from its own model file instead (``weights/model.pt``), which holds
  its architecture spec.
- A file: an iocane model file (``iocane.modelio``), a state_dict ``.pt`` / ``.pth`` /
  ``.safetensors`` for the network ``model.name`` builds with the data's spec, or a
  ``torch.export`` program ``.pt2`` (``torch.export.load(...).module()``).

Input convention: iocane attacks images in [0, 1]. A model from an MLflow URI or a ``.pt2`` is
used as it is, so it must take [0, 1] images itself; when ``model.mean`` / ``model.std`` are set,
iocane's ``Normalize`` is put in front of it. A state_dict is loaded into iocane's own wrapped
network, whose normalisation comes from ``model.mean`` / ``model.std`` or the data.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from iocane.base.config import ConfigError, ModelConfig
from iocane.base.errors import ModelFileError, ModelUriError
from iocane.base.files import sha256_file
from iocane.data.prepared import PreparedData
from iocane.model_uris import ResolvedUri, resolve_model_uri
from iocane.modelio import load_model
from iocane.training.base_model import (
    load_network_state,
    model_spec_for,
    network_part,
    read_state_dict,
)
from iocane.training.mlflow_models import iocane_model_file, mlflow_pytorch
from models import build_model
from models.normalize import Normalize

log = logging.getLogger("iocane")


class AsGiven(nn.Module):
    """A model loaded from outside, used as it is (optionally behind iocane's ``Normalize``).

    A ``torch.export`` module refuses ``train()`` / ``eval()`` (its mode is fixed when it is
    exported), so this wrapper switches the mode of what it holds only where that is allowed."""

    def __init__(self, network: nn.Module, normalize: Normalize | None = None) -> None:
        super().__init__()
        self.normalize = normalize
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalize(images) if self.normalize is not None else images)

    def train(self, mode: bool = True) -> AsGiven:
        self.training = mode
        # torch.export: "Calling train() is not supported yet."
        with contextlib.suppress(NotImplementedError):
            self.network.train(mode)
        return self


@dataclass
class LoadedModel:
    """A model ready to evaluate: images in [0, 1] to logits, in eval mode, on the device.
    ``source`` is the URI or path as given; ``lineage`` what it resolved to (the registered
    version or run, or the file's sha256); ``resolved`` the URI's resolution, if a URI."""

    model: nn.Module
    source: str
    kind: str  # iocane-version | mlflow | iocane-file | state_dict | pt2
    lineage: dict
    resolved: ResolvedUri | None = None


def _normalize(config: ModelConfig | None, channels: int) -> Normalize | None:
    """iocane's normalisation in front of an as-given model, when the user set both values."""
    if config is None or (config.mean is None and config.std is None):
        return None
    for key in ("mean", "std"):
        values = getattr(config, key)
        if values is None:
            raise ConfigError(
                f"model.{key}: set both model.mean and model.std to normalise a given model",
                key=f"model.{key}",
            )
        if len(values) != channels:
            raise ConfigError(
                f"model.{key}: {len(values)} value(s) given but the data has {channels} channel(s)",
                key=f"model.{key}",
            )
    return Normalize(config.mean, config.std)


def _as_given(
    network: nn.Module, config: ModelConfig | None, data: PreparedData, device: torch.device
) -> nn.Module:
    model = AsGiven(network, _normalize(config, data.meta["in_channels"]))
    return model.to(device).eval()


def _check_fits(model: nn.Module, data: PreparedData, source: str, error: type) -> None:
    """A model used as given must take a batch of any size of the data's images and return one
    logit per class: a mismatch is named here, not deep inside an attack."""
    shape = (data.meta["in_channels"], data.meta["image_size"], data.meta["image_size"])
    device = next(model.parameters(), torch.empty(0)).device
    classes = data.meta["num_classes"]
    generator = torch.Generator().manual_seed(0)  # the global random state is left as it was
    for batch in (2, 3):
        try:
            with torch.no_grad():
                logits = model(torch.rand(batch, *shape, generator=generator).to(device))
        except Exception as failure:  # a static batch size, another image size or channel count
            first = str(failure).strip().splitlines()[0] if str(failure).strip() else ""
            raise error(
                f"{source} does not take a batch of {batch} images of shape {shape} ({first}); "
                "a torch.export program needs a dynamic batch dimension"
            ) from None
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (batch, classes):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise error(f"{source} returns {got} for {batch} images, not ({batch}, {classes})")


def load_from_uri(
    uri: str,
    root: Path,
    device: torch.device,
    *,
    data: PreparedData,
    config: ModelConfig | None = None,
) -> LoadedModel:
    """The model at ``uri``: an iocane version from its own model file (its spec says how to
    rebuild it), any other MLflow PyTorch model as it is."""
    resolved = resolve_model_uri(uri, root)
    if resolved.is_iocane_version:
        model, _ = load_model(iocane_model_file(resolved, root), device)
        return LoadedModel(model, uri, "iocane-version", resolved.lineage(), resolved)
    model = _as_given(mlflow_pytorch(resolved, root), config, data, device)
    _check_fits(model, data, uri, ModelUriError)
    return LoadedModel(model, uri, "mlflow", resolved.lineage(), resolved)


def load_from_file(
    path: Path, device: torch.device, *, data: PreparedData, config: ModelConfig
) -> LoadedModel:
    """The model in a file: ``.pt2`` as it is, an iocane model file by its spec, a state_dict
    into the network ``model.name`` builds for ``data``."""
    if not path.is_file():
        raise ModelFileError(f"model file {path} is missing")
    lineage = {"path": str(path), "sha256": sha256_file(path)}
    if path.suffix == ".pt2":
        try:
            network = torch.export.load(str(path)).module()
        except Exception as error:  # BadZipFile, a program of another torch version...
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ModelFileError(
                f"model file {path} is not a torch.export program that loads "
                f"({type(error).__name__}: {first})"
            ) from None
        model = _as_given(network, config, data, device)
        _check_fits(model, data, str(path), ModelFileError)
        return LoadedModel(model, str(path), "pt2", lineage)
    if _is_iocane(path):
        model, _ = load_model(path, device)
        return LoadedModel(model, str(path), "iocane-file", lineage)
    spec = model_spec_for(config, data)
    model = build_model(spec)  # every weight is then the file's: strict, as model.weights is
    load_network_state(
        model.get_submodule("net"),
        network_part(read_state_dict(path, what="model file")),
        where=f"model file {path}",
        model_name=config.name,
        num_classes=spec.num_classes,
    )
    return LoadedModel(model.to(device).eval(), str(path), "state_dict", lineage)


def _is_iocane(path: Path) -> bool:
    """Whether a ``.pt`` file is an iocane model file (a spec beside the state_dict)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # read_state_dict or load_model names what is wrong with it
        return False
    return isinstance(payload, dict) and {"spec", "state_dict"} <= set(payload)
