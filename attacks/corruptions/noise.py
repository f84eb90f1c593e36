"""Noise corruptions (Hendrycks & Dietterich 2019): Gaussian, shot (Poisson) and impulse
(salt and pepper), each pixel and channel drawn on its own, with the reference's constants."""

from __future__ import annotations

import torch

# Per severity 1..5, as in imagecorruptions: the noise's standard deviation, the photon count
# (fewer photons, more noise) and the share of values flipped to 0 or 1.
GAUSSIAN_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_PHOTONS = (60, 25, 12, 5, 3)
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)


def gaussian_noise(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    sigma = GAUSSIAN_SIGMA[severity - 1]
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return images + sigma * noise


def shot_noise(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    photons = SHOT_PHOTONS[severity - 1]
    return torch.poisson(images * photons, generator=generator) / photons


def impulse_noise(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """scikit-image's ``random_noise(mode="s&p")``: each value flipped with probability ``amount``,
    half of the flips to 1 (salt), half to 0 (pepper); the rest stay bit-identical."""
    amount = IMPULSE_AMOUNT[severity - 1]
    flipped = torch.rand(images.shape, generator=generator, device=images.device) <= amount
    salted = torch.rand(images.shape, generator=generator, device=images.device) <= 0.5
    salt_or_pepper = salted.to(images.dtype)
    return torch.where(flipped, salt_or_pepper, images)
