"""Image classifiers for PGD adversarial training.

Each architecture lives in its own module; this package exposes a serialisable
:class:`ModelSpec` and :func:`build_model`, which wraps the network behind a
:class:`~models.normalize.Normalize` layer so every built model maps images in
[0, 1] (N, C, H, W) to logits (N, num_classes).
"""

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from torch import nn

from models import (
    compact_cnn,
    ibp_cnn,
    madry_cnn,
    preact_resnet,
    small_cnn,
    sources,
    wide_resnet,
)
from models.normalize import Normalize

MODEL_NAMES: tuple[str, ...] = (
    "small_cnn",
    "madry_cnn",
    "compact_cnn",
    "preact_resnet18",
    "wide_resnet",
    "ibp_cnn",
)

# The convolutional networks built alike, from (channels, classes, image size, width): each
# module names its class NETWORK and its DEFAULT_WIDTH.
_CNNS = {
    "small_cnn": small_cnn,
    "madry_cnn": madry_cnn,
    "compact_cnn": compact_cnn,
    "ibp_cnn": ibp_cnn,
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model before loading its state_dict."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    width: int = 0
    depth: int = 0

    def __post_init__(self) -> None:
        # Accept lists (e.g. straight from JSON) but store tuples so the spec
        # stays hashable and comparable.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"mean and std need one value per channel (in_channels={self.in_channels}), "
                f"got mean={self.mean} std={self.std}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.width < 0:
            raise ValueError(f"width must be >= 0 (0 = default), got {self.width}")
        if self.depth < 0:
            raise ValueError(f"depth must be >= 0 (0 = default), got {self.depth}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"unknown ModelSpec key(s): {', '.join(unknown)}")
        missing = sorted(
            name for name, f in fields.items() if f.default is dataclasses.MISSING and name not in d
        )
        if missing:
            raise ValueError(f"missing ModelSpec key(s): {', '.join(missing)}")
        return cls(**d)


def build_model(spec: ModelSpec) -> nn.Module:
    """Build ``Normalize -> network`` for ``spec``, freshly initialised.

    ``spec.name`` is one of :data:`MODEL_NAMES` or ``torchvision:<builder>``, ``timm:<name>``,
    ``<module>:<factory>`` (:mod:`models.sources`); the bare network is always the ``net`` child,
    so a user's state_dict for it loads into ``model.net``."""
    if sources.is_external(spec.name):
        return _wrap(spec, _external_network(spec))
    if spec.name not in MODEL_NAMES:
        raise ValueError(f"unknown model name {spec.name!r}; expected one of {MODEL_NAMES}")
    if spec.depth != 0 and spec.name != "wide_resnet":
        # Refuse rather than ignore, so a config cannot silently claim a depth
        # that the built network does not have.
        raise ValueError(f"depth={spec.depth} is only meaningful for wide_resnet, not {spec.name}")
    net: nn.Module
    if spec.name in _CNNS:
        module = _CNNS[spec.name]
        width = spec.width or module.DEFAULT_WIDTH
        net = module.NETWORK(spec.in_channels, spec.num_classes, spec.image_size, width)
    elif spec.name == "preact_resnet18":
        net = preact_resnet.PreActResNet18(
            spec.in_channels, spec.num_classes, spec.width or preact_resnet.DEFAULT_WIDTH
        )
    else:
        net = wide_resnet.WideResNet(
            spec.in_channels,
            spec.num_classes,
            spec.depth or wide_resnet.DEFAULT_DEPTH,
            spec.width or wide_resnet.DEFAULT_WIDEN,
        )
    return _wrap(spec, net)


def _external_network(spec: ModelSpec) -> nn.Module:
    if spec.width or spec.depth:
        raise ValueError(f"width/depth apply to iocane's own architectures, not {spec.name}")
    return sources.build_network(spec.name, spec.in_channels, spec.image_size, spec.num_classes)


def _wrap(spec: ModelSpec, net: nn.Module) -> nn.Module:
    # Named children give readable state_dict keys ("normalize.mean", "net.…")
    # while model[0] / model[1] indexing still works. An input adapter (a grey image repeated
    # for an RGB network) has no parameters, so it adds no keys.
    layers: OrderedDict[str, nn.Module] = OrderedDict(normalize=Normalize(spec.mean, spec.std))
    adapter = sources.input_adapter(spec.name, spec.in_channels)
    if adapter is not None:
        layers["adapt"] = adapter
    layers["net"] = net
    return nn.Sequential(layers)


__all__ = ["MODEL_NAMES", "ModelSpec", "Normalize", "build_model"]
