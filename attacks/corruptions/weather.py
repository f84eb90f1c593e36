"""Weather corruptions (Hendrycks & Dietterich 2019): snow and fog, with the reference's
constants. Frost is left out: it blends in crops of six photographs the reference package ships,
which iocane does not carry (and a frost made of other pictures would not be the benchmark's)."""

from __future__ import annotations

import torch

from attacks.corruptions.filters import apply_axes, clipped_zoom_matrix, motion_blur

# Per severity 1..5, as in imagecorruptions.
FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # strength, wibble decay
# mean, std, zoom, threshold, blur radius, blur sigma, share of the image kept
SNOW = (
    (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
_GRAY = (0.299, 0.587, 0.114)  # OpenCV's RGB -> gray weights


def plasma_fractal(
    batch: int, size: int, wibble_decay: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(batch, size, size) float64 height maps in [0, 1] by the diamond-square algorithm (the
    reference's ``plasma_fractal``), one per image; ``size`` is a power of two."""
    heights = torch.zeros(batch, size, size, dtype=torch.float64, device=device)
    step, wibble = size, 100.0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        jitter = torch.rand(total.shape, generator=generator, device=device, dtype=torch.float64)
        return total / 4 + wibble * (jitter * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        corners = heights[:, ::step, ::step]
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        heights[:, half::step, half::step] = wibbled_mean(squares)
        centres = heights[:, half::step, half::step]
        corners = heights[:, ::step, ::step]
        across = (centres + centres.roll(1, dims=1)) + (corners + corners.roll(-1, dims=2))
        heights[:, ::step, half::step] = wibbled_mean(across)
        down = (centres + centres.roll(1, dims=2)) + (corners + corners.roll(-1, dims=1))
        heights[:, half::step, ::step] = wibbled_mean(down)
        step //= 2
        wibble /= wibble_decay
    lowest = heights.amin(dim=(1, 2), keepdim=True)
    heights = heights - lowest
    return heights / heights.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def fog_from_fractal(images: torch.Tensor, severity: int, fractal: torch.Tensor) -> torch.Tensor:
    """Fog given its height maps (N, >=H, >=W): add them, then rescale by the image's maximum."""
    strength = FOG[severity - 1][0]
    height, width = images.shape[-2:]
    brightest = images.amax(dim=(1, 2, 3), keepdim=True)
    fogged = images + strength * fractal[:, None, :height, :width].to(images)
    return fogged * brightest / (brightest + strength)


def fog(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    height, width = images.shape[-2:]
    size = 1 << (max(height, width, 2) - 1).bit_length()  # the next power of two
    fractal = plasma_fractal(images.shape[0], size, FOG[severity - 1][1], generator, images.device)
    return fog_from_fractal(images, severity, fractal)


def snow(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian flakes, zoomed, thresholded, motion-blurred at a downward angle, quantised to 8
    bits, added twice (once turned 180 degrees) to the image lightened towards its gray level."""
    mean, std, zoom, threshold, radius, sigma, kept = SNOW[severity - 1]
    batch, channels, height, width = images.shape
    device = images.device
    flakes = torch.randn(
        (batch, 1, height, width), generator=generator, device=device, dtype=torch.float64
    )
    flakes = apply_axes(
        flakes * std + mean, clipped_zoom_matrix(height, zoom), clipped_zoom_matrix(width, zoom)
    )
    flakes = torch.where(flakes < threshold, 0.0, flakes).clamp(0, 1)
    angles = torch.rand(batch, generator=generator, device=device, dtype=torch.float64) * 90 - 135
    flakes = motion_blur(flakes, radius, sigma, angles)
    flakes = (torch.round(flakes * 255) / 255)[..., :height, :width].to(images)
    if channels == 3:
        gray = sum(weight * images[:, index : index + 1] for index, weight in enumerate(_GRAY))
    else:
        gray = images
    lightened = kept * images + (1 - kept) * torch.maximum(images, gray * 1.5 + 0.5)
    return lightened + flakes + flakes.flip(-2, -1)
