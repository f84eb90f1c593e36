"""Common corruptions: the Hendrycks & Dietterich 2019 benchmark ("Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations"), on any image size, gray or colour.

Each corruption uses the constants per severity (1 to 5) of the reference package
``imagecorruptions`` (Michaelis et al. 2019, which generalised ImageNet-C to any image size) and
its filters, borders and resampling rules, rewritten in torch for (N, C, H, W) float images in
[0, 1] on the images' device, batched, drawing from a ``torch.Generator`` seeded by ``seed``:
the same seed gives the same pixels. ``benchmarks/corruptions_vs_imagecorruptions.py`` shows
where the pixels equal the reference's and where (random draws, 8-bit rounding) they only agree
in distribution.

Fourteen of the fifteen: frost is left out, since it blends in the reference's six bundled
photographs (see ``weather``). Gray images (C = 1) are corrupted as the reference corrupts a
gray image turned RGB, each channel the same; only the noises draw per channel.

Example::

    foggy = corrupt(images, "fog", severity=3, seed=0)          # (N, C, H, W) in [0, 1]
    member = Corruption("fog", 3)                               # member.name == "fog_s3"
    foggy = member(model, images, labels)                       # the attack call shape
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from attacks.corruptions.blur import defocus_blur, glass_blur, motion_blur, zoom_blur
from attacks.corruptions.digital import (
    brightness,
    contrast,
    elastic_transform,
    jpeg_compression,
    pixelate,
)
from attacks.corruptions.noise import gaussian_noise, impulse_noise, shot_noise
from attacks.corruptions.weather import fog, snow
from attacks.threat import make_generator

CorruptionFunction = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]

# In the benchmark's order (noise, blur, weather, digital).
_FUNCTIONS: dict[str, CorruptionFunction] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
CORRUPTIONS: tuple[str, ...] = tuple(_FUNCTIONS)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def check_corruption(name: str, severity: int) -> None:
    """A ValueError naming the corruption or the severity when either is not one of ours."""
    if name not in _FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"corruption severity must be an integer from 1 to 5, got {severity!r}")


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``images`` (N, C, H, W) float in [0, 1], C 1 or 3, under corruption ``name`` at
    ``severity``; same shape, dtype and device, in [0, 1]."""
    check_corruption(name, severity)
    if images.dim() != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
        raise ValueError(
            f"corrupt wants float images of shape (N, C, H, W) with C 1 or 3, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        return images.detach().clone()
    generator = make_generator(seed, images.device)
    with torch.no_grad():
        return _FUNCTIONS[name](images.detach(), severity, generator).clamp(0.0, 1.0)


@dataclass(frozen=True)
class Corruption:
    """One corruption at one severity as a threat member of the attack call shape: it ignores the
    model and the labels. ``Corruption("fog", 3).name == "fog_s3"`` (built from a member's name,
    as ``dataclasses.replace`` does, it keeps it)."""

    name: str
    severity: int
    seed: int = 0
    corruption: str = field(init=False)

    def __post_init__(self) -> None:
        suffix = f"_s{self.severity}"
        base = self.name
        if base not in _FUNCTIONS and base.endswith(suffix):
            base = base[: -len(suffix)]
        check_corruption(base, self.severity)
        object.__setattr__(self, "corruption", base)
        object.__setattr__(self, "name", base + suffix)

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return corrupt(images, self.corruption, self.severity, self.seed)


__all__ = ["CORRUPTIONS", "SEVERITIES", "Corruption", "check_corruption", "corrupt"]
