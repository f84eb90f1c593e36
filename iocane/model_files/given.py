"""A whole model to evaluate, from any source ``iocane evaluate`` takes (``--model-file``,
``--model-uri`` and the baselines), loaded in one place: ``open_model``.

- An MLflow model URI of any PyTorch-flavour model (``models:/NAME@ALIAS``, ``models:/NAME/N``,
  ``runs:/RUN_ID/PATH``), from the project's tracking store, loaded with
  ``mlflow.pytorch.load_model`` on the CPU and then moved to the run-time device. A version that
  iocane registered is read from its own model file instead (``weights/model.pt``), which holds
  its architecture spec.
- A file: an iocane model file (``iocane_file``), a state_dict ``.pt`` / ``.pth`` /
  ``.safetensors`` for the network ``model.name`` builds with the data's spec, or a
  ``torch.export`` program ``.pt2`` (``torch.export.load(...).module()``).

Input convention: iocane attacks images in [0, 1]. A model from an MLflow URI or a ``.pt2`` is
used as it is, so it must take [0, 1] images itself; when ``model.mean`` / ``model.std`` are set,
iocane's ``Normalize`` is put in front of it. A state_dict is loaded into iocane's own wrapped
network, whose normalisation comes from ``model.mean`` / ``model.std`` or the data.

The data enters as its spec (``PreparedData.model_spec``: channels, image size, classes), so this
area sits below the data area in the layers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from iocane.base.config import ConfigError, ModelConfig
from iocane.base.errors import ModelFileError, ModelUriError
from iocane.base.files import sha256_file
from iocane.model_files.iocane_file import is_iocane_file, load_model
from iocane.model_files.mlflow_store import iocane_model_file, mlflow_pytorch
from iocane.model_files.start import model_spec_for
from iocane.model_files.state_dicts import load_network_state, network_part, read_state_dict
from iocane.model_files.uris import ResolvedUri, is_model_uri, resolve_model_uri
from models import ModelSpec, build_model
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
    network: nn.Module, config: ModelConfig | None, data_spec: ModelSpec, device: torch.device | str
) -> nn.Module:
    model = AsGiven(network, _normalize(config, data_spec.in_channels))
    return model.to(device).eval()


def _check_fits(model: nn.Module, data_spec: ModelSpec, source: str, error: type) -> None:
    """A model used as given must take a batch of any size of the data's images and return one
    logit per class: a mismatch is named here, not deep inside an attack."""
    size = data_spec.image_size
    shape = (data_spec.in_channels, size, size)
    device = next(model.parameters(), torch.empty(0)).device
    classes = data_spec.num_classes
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
    device: torch.device | str,
    *,
    data_spec: ModelSpec,
    config: ModelConfig | None = None,
) -> LoadedModel:
    """The model at ``uri``: an iocane version from its own model file (its spec says how to
    rebuild it), any other MLflow PyTorch model as it is."""
    resolved = resolve_model_uri(uri, root)
    if resolved.is_iocane_version:
        model, _ = load_model(iocane_model_file(resolved, root), device)
        return LoadedModel(model, uri, "iocane-version", resolved.lineage(), resolved)
    model = _as_given(mlflow_pytorch(resolved, root), config, data_spec, device)
    _check_fits(model, data_spec, uri, ModelUriError)
    return LoadedModel(model, uri, "mlflow", resolved.lineage(), resolved)


def load_from_file(
    path: Path, device: torch.device | str, *, data_spec: ModelSpec, config: ModelConfig
) -> LoadedModel:
    """The model in a file: ``.pt2`` as it is, an iocane model file by its spec, a state_dict
    into the network ``model.name`` builds for the data's spec."""
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
        model = _as_given(network, config, data_spec, device)
        _check_fits(model, data_spec, str(path), ModelFileError)
        return LoadedModel(model, str(path), "pt2", lineage)
    if is_iocane_file(path):
        model, _ = load_model(path, device)
        return LoadedModel(model, str(path), "iocane-file", lineage)
    spec = model_spec_for(config, data_spec)
    model = build_model(spec)  # every weight is then the file's: strict, as model.weights is
    load_network_state(
        model.get_submodule("net"),
        network_part(read_state_dict(path, what="model file")),
        where=f"model file {path}",
        model_name=config.name,
        num_classes=spec.num_classes,
    )
    return LoadedModel(model.to(device).eval(), str(path), "state_dict", lineage)


def open_model(
    source: str | Path,
    *,
    root: Path,
    device: torch.device | str,
    data_spec: ModelSpec,
    config: ModelConfig,
) -> LoadedModel:
    """The model ``source`` names, whatever kind: a model URI, or a file (relative to the project
    directory ``root``) that is a ``.pt2``, an iocane model file or a state_dict (``.pt``,
    ``.pth``, ``.safetensors``). ``source`` stays as the user gave it in the result."""
    if is_model_uri(str(source)):
        return load_from_uri(str(source), root, device, data_spec=data_spec, config=config)
    path = Path(source) if Path(source).is_absolute() else root / source
    loaded = load_from_file(path, device, data_spec=data_spec, config=config)
    return dataclasses.replace(loaded, source=str(source))  # the path as the user gave it
