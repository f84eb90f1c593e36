"""Networks that are not iocane's own: ``torchvision:<builder>``, ``timm:<name>`` and
``<module>:<factory>`` (the user's code).

Each builder returns the bare network for the data's channels, image size and class count; the
caller (:func:`models.build_model`) puts iocane's :class:`~models.normalize.Normalize` in front,
so attacks still work on images in [0, 1]. Nothing is downloaded: torchvision and timm models are
built with random weights, and a starting point comes from ``model.weights``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from iocane.base.errors import ModelSourceError


def is_external(name: str) -> bool:
    """Whether ``name`` is ``source:builder`` rather than one of iocane's own architectures."""
    return ":" in name


class RepeatChannel(nn.Module):
    """A one-channel image as three equal channels, for networks built for RGB.

    Repeating the channel, not rebuilding the first convolution, keeps the network exactly the
    builder's: a state_dict trained on RGB (or on repeated grey) images loads unchanged."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.channels, -1, -1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def _split(name: str) -> tuple[str, str]:
    source, _, builder = name.partition(":")
    if not source or not builder:
        raise ModelSourceError(
            f"model.name {name!r} must be torchvision:<builder>, timm:<name> or <module>:<factory>"
        )
    return source, builder


def check_source(name: str) -> None:
    """ModelSourceError unless ``name`` names a network that can be built: a torchvision
    builder that exists, timm and its model, a module with a factory of the right signature.
    Cheap next to a run (nothing is built), so ``iocane run`` checks it before any work: a
    misspelt builder fails in seconds, not after the data is prepared."""
    if not is_external(name):
        return
    source, builder = _split(name)
    if source == "torchvision":
        _torchvision_builder(name, builder)
    elif source == "timm":
        _timm_module(name, builder)
    else:
        _factory_function(name, source, builder)


def build_network(name: str, channels: int, image_size: int, num_classes: int) -> nn.Module:
    """The bare network ``name`` (``source:builder``) names, freshly initialised."""
    source, builder = _split(name)
    if source == "torchvision":
        return _torchvision(name, builder, num_classes)
    if source == "timm":
        return _timm(name, builder, channels, num_classes)
    return _factory(name, source, builder, channels, image_size, num_classes)


def input_adapter(name: str, channels: int) -> nn.Module | None:
    """The layer between normalisation and network, if the network needs one: torchvision
    classifiers take three channels, so a grayscale input is repeated (timm and the user's
    factory are told the channel count instead)."""
    if name.startswith("torchvision:") and channels == 1:
        return RepeatChannel(3)
    return None


def _torchvision_builder(name: str, builder: str) -> None:
    from torchvision import models as tv_models

    known = tv_models.list_models(module=tv_models)  # classification builders only
    if builder not in known:
        raise ModelSourceError(
            f"model.name {name!r}: torchvision has no classification model {builder!r} "
            f"(e.g. resnet18, mobilenet_v3_small, efficientnet_b0)"
        )


def _torchvision(name: str, builder: str, num_classes: int) -> nn.Module:
    from torchvision import models as tv_models

    _torchvision_builder(name, builder)
    try:
        return tv_models.get_model(builder, weights=None, num_classes=num_classes)
    except (TypeError, ValueError) as error:
        message = f"model.name {name!r}: torchvision cannot build it: {error}"
        raise ModelSourceError(message) from None


def _timm_module(name: str, builder: str) -> ModuleType:
    """timm, when it is installed and has the model ``builder``."""
    try:
        import timm
    except ImportError:
        raise ModelSourceError(
            f"model.name {name!r} needs the timm extra: pip install 'iocane[timm]'"
        ) from None
    if builder not in timm.list_models():
        raise ModelSourceError(f"model.name {name!r}: timm has no model {builder!r}")
    return timm


def _timm(name: str, builder: str, channels: int, num_classes: int) -> nn.Module:
    timm = _timm_module(name, builder)
    return timm.create_model(builder, pretrained=False, num_classes=num_classes, in_chans=channels)


def project_on_path() -> None:
    """The project directory first on the import path: a file models_mine.py beside
    params.yaml is importable as ``models_mine``."""
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _import_module(name: str, module: str) -> object:
    project_on_path()
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ModelSourceError(
            f"model.name {name!r}: cannot import module {module!r} ({error})"
        ) from None


def _factory_function(name: str, module: str, factory: str) -> Callable[..., object]:
    """The user's factory ``module.factory``, callable with channels=, image_size=, num_classes=."""
    function = getattr(_import_module(name, module), factory, None)
    if function is None or not callable(function):
        raise ModelSourceError(f"model.name {name!r}: module {module!r} has no factory {factory!r}")
    try:
        inspect.signature(function).bind(channels=1, image_size=1, num_classes=2)
    except (TypeError, ValueError):
        raise ModelSourceError(
            f"model.name {name!r}: the factory must accept channels=, image_size=, num_classes="
        ) from None
    return function


def _factory(
    name: str, module: str, factory: str, channels: int, image_size: int, num_classes: int
) -> nn.Module:
    function = _factory_function(name, module, factory)
    network = function(channels=channels, image_size=image_size, num_classes=num_classes)
    if not isinstance(network, nn.Module):
        raise ModelSourceError(
            f"model.name {name!r}: the factory returned {type(network).__name__}, not an nn.Module"
        )
    return network


def last_linear(network: nn.Module) -> tuple[str, nn.Linear] | None:
    """The classifier head: the network's last ``nn.Linear`` (in registration order)."""
    found = None
    for child_name, module in network.named_modules():
        if isinstance(module, nn.Linear):
            found = (child_name, module)
    return found
