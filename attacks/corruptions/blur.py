"""Blur corruptions (Hendrycks & Dietterich 2019): defocus, glass, motion and zoom blur, with the
constants and the border handling of the reference package ``imagecorruptions``."""

from __future__ import annotations

import numpy as np
import torch

from attacks.corruptions.filters import (
    apply_axes,
    clipped_zoom_matrix,
    correlate,
    disk_kernel,
    gaussian_filter,
)
from attacks.corruptions.filters import (
    motion_blur as motion_blur_filter,
)

# Per severity 1..5, as in imagecorruptions.
DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, alias blur
GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, max shift, passes
MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, sigma
# The zoom factors: NumPy's aranges, so the factors (and their count) are the reference's bits.
ZOOM_FACTORS = (
    np.arange(1, 1.11, 0.01),
    np.arange(1, 1.16, 0.01),
    np.arange(1, 1.21, 0.02),
    np.arange(1, 1.26, 0.02),
    np.arange(1, 1.31, 0.03),
)


def defocus_blur(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    radius, alias_blur = DEFOCUS[severity - 1]
    return correlate(images, disk_kernel(radius, alias_blur), "reflect101")


def glass_blur(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Blur, quantise to 8 bits (the reference's ``np.uint8``), give each interior pixel the
    value of a random neighbour up to ``max shift`` away (bottom-right to top-left, ``passes``
    times), blur again. The reference means to swap the two pixels, but its tuple swap assigns
    through NumPy views and so copies the neighbour in, leaving it as it was: we do what it does.
    The copies are sequential within an image, as in the reference, and run for the whole batch
    at once (each image with its own draws)."""
    sigma, max_shift, passes = GLASS[severity - 1]
    blurred = torch.floor(gaussian_filter(images, sigma, sigma) * 255) / 255
    height, width = images.shape[-2:]
    rows = range(height - max_shift, max_shift, -1)
    cols = range(width - max_shift, max_shift, -1)
    pixels = [(row, col) for row in rows for col in cols]
    if pixels:
        blurred = _copy_neighbours(blurred, pixels, max_shift, passes, generator)
    return gaussian_filter(blurred, sigma, sigma)


def _copy_neighbours(
    images: torch.Tensor,
    pixels: list[tuple[int, int]],
    max_shift: int,
    passes: int,
    generator: torch.Generator,
) -> torch.Tensor:
    batch, channels, height, width = images.shape
    device = images.device
    # Offsets in [-max_shift, max_shift), as NumPy's randint draws them.
    offsets = torch.randint(
        -max_shift, max_shift, (passes, len(pixels), 2, batch), generator=generator, device=device
    )
    flat = images.reshape(batch, channels, height * width).clone()
    for sweep in range(passes):
        for index, (row, col) in enumerate(pixels):
            down, right = offsets[sweep, index]
            here = row * width + col
            there = ((row + down) * width + (col + right))[:, None, None].expand(batch, channels, 1)
            flat[:, :, here] = flat.gather(2, there)[..., 0]
    return flat.reshape(images.shape)


def motion_blur(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    radius, sigma = MOTION[severity - 1]
    angles = torch.rand(
        images.shape[0], generator=generator, device=images.device, dtype=torch.float64
    )
    return motion_blur_filter(images, radius, sigma, angles * 90 - 45)


def zoom_blur(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """The mean of the image and its centre zoomed by each factor (cropped back to size)."""
    height, width = images.shape[-2:]
    factors = ZOOM_FACTORS[severity - 1]
    zoomed = torch.zeros_like(images)
    for factor in factors:
        rows = clipped_zoom_matrix(height, float(factor), keep=height)
        cols = clipped_zoom_matrix(width, float(factor), keep=width)
        zoomed = zoomed + apply_axes(images, rows, cols)
    return (images + zoomed) / (len(factors) + 1)
