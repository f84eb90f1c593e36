"""The image filters the common corruptions are built from, in torch, batched over (N, C, H, W).

Each one reproduces the filter the reference package ``imagecorruptions`` calls (OpenCV's
``filter2D`` and ``GaussianBlur``, scikit-image's ``gaussian``, SciPy's ``zoom``, the
reference's own edge-replicating ``shift``), borders included, so the corruptions built on them
give the reference's pixels on images it accepts and still work on images smaller than the
kernels (an 8x8 digit under a 17x17 defocus disk). Borders are indices, not ``F.pad`` modes:
``F.pad(mode="reflect")`` refuses a pad as wide as the image, which the small images need.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def border_index(
    length: int, before: int, after: int, mode: str, device: torch.device
) -> torch.Tensor:
    """Source indices of a border-extended axis of ``length`` pixels.

    ``mode`` names the border: "reflect101" (OpenCV's default, ``c b | a b c | b a``),
    "symmetric" (SciPy's "reflect", ``b a | a b c | c b``) or "nearest" (edge repeated)."""
    positions = torch.arange(-before, length + after, device=device)
    if mode == "nearest" or length == 1:
        return positions.clamp(0, length - 1)
    if mode == "reflect101":
        period = 2 * (length - 1)
        folded = positions.remainder(period)
        return torch.where(folded > length - 1, period - folded, folded)
    if mode == "symmetric":
        period = 2 * length
        folded = positions.remainder(period)
        return torch.where(folded >= length, period - 1 - folded, folded)
    raise ValueError(f"unknown border mode {mode!r}")


def pad_border(images: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """``images`` with ``pad_h`` rows and ``pad_w`` columns added on each side by ``mode``."""
    height, width = images.shape[-2:]
    rows = border_index(height, pad_h, pad_h, mode, images.device)
    cols = border_index(width, pad_w, pad_w, mode, images.device)
    return images.index_select(-2, rows).index_select(-1, cols)


def correlate(images: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Each channel correlated with the odd-sided 2-D ``kernel`` (as ``cv2.filter2D`` and SciPy
    do: no flip), borders extended by ``mode``; same size out."""
    kernel_h, kernel_w = kernel.shape
    padded = pad_border(images, kernel_h // 2, kernel_w // 2, mode)
    channels = images.shape[1]
    weight = kernel.to(images).expand(channels, 1, kernel_h, kernel_w)
    return F.conv2d(padded, weight, groups=channels)


def gaussian_kernel1d(sigma: float, truncate: float) -> torch.Tensor:
    """SciPy's Gaussian taps: radius ``int(truncate * sigma + 0.5)``, normalised (float64)."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    if sigma <= 0:
        return (offsets == 0).double()
    taps = torch.exp(-0.5 / sigma**2 * offsets**2)
    return taps / taps.sum()


def gaussian_filter(
    images: torch.Tensor,
    sigma_h: float,
    sigma_w: float,
    truncate: float = 4.0,
    mode: str = "nearest",
) -> torch.Tensor:
    """``skimage.filters.gaussian`` per channel (SciPy's separable filter, rows then columns);
    its default border is "nearest"."""
    column = gaussian_kernel1d(sigma_h, truncate)[:, None]
    row = gaussian_kernel1d(sigma_w, truncate)[None, :]
    return correlate(correlate(images, column, mode), row, mode)


def disk_kernel(radius: int, alias_blur: float) -> torch.Tensor:
    """The defocus kernel: an aliased disk of ``radius`` on a grid of at least 17x17, blurred by a
    3x3 (5x5 past radius 8) Gaussian of ``alias_blur`` with OpenCV's reflect-101 border."""
    half = max(radius, 8)
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    inside = (offsets[None, :] ** 2 + offsets[:, None] ** 2) <= radius**2
    disk = inside.double() / inside.sum()
    side = 3 if radius <= 8 else 5
    taps = torch.exp(
        -0.5 / alias_blur**2 * (torch.arange(side, dtype=torch.float64) - side // 2) ** 2
    )
    taps = taps / taps.sum()
    blurred = correlate(disk[None, None], taps[:, None] * taps[None, :], "reflect101")
    # The reference keeps the kernel in float32, as OpenCV returns it.
    return blurred[0, 0].float().double()


def clipped_zoom_matrix(length: int, zoom: float, keep: int | None = None) -> torch.Tensor:
    """The reference's ``clipped_zoom`` along one axis as a (out, length) float64 matrix: crop the
    central ``ceil(length / zoom)`` pixels, stretch them by ``zoom`` with SciPy's linear
    ``ndimage.zoom`` (corner-aligned, out = round(crop * zoom)), keep the first ``keep`` rows."""
    crop = math.ceil(length / zoom)
    top = (length - crop) // 2
    out = round(crop * zoom)  # Python's round, as SciPy's zoom sizes its output
    ratio = (crop - 1) / (out - 1) if out > 1 else 1.0
    coordinates = torch.arange(out, dtype=torch.float64) * ratio
    lower = coordinates.floor().clamp(max=crop - 1)
    fraction = coordinates - lower
    upper = (lower + 1).clamp(max=crop - 1)
    matrix = torch.zeros(out, length, dtype=torch.float64)
    rows = torch.arange(out)
    matrix.index_put_((rows, top + lower.long()), 1 - fraction, accumulate=True)
    matrix.index_put_((rows, top + upper.long()), fraction, accumulate=True)
    return matrix if keep is None else matrix[:keep]


def apply_axes(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ image @ cols.T`` for every channel: a separable linear resampling."""
    rows, cols = rows.to(images), cols.to(images)
    return rows @ images @ cols.T


def shift_replicate(images: torch.Tensor, down: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Each image moved by its own whole-pixel ``down`` and ``right`` (N,) shifts, the uncovered
    border filled with the edge row or column (the reference's ``shift``)."""
    batch, channels, height, width = images.shape
    rows = (torch.arange(height, device=images.device) - down[:, None]).clamp(0, height - 1)
    cols = (torch.arange(width, device=images.device) - right[:, None]).clamp(0, width - 1)
    moved = images.gather(2, rows[:, None, :, None].expand(batch, channels, height, width))
    return moved.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


def motion_blur(
    images: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor
) -> torch.Tensor:
    """The reference's motion blur, one angle (degrees, (N,) float64) per image: a one-sided
    Gaussian-weighted sum of the image shifted 0, 1, ... ``2 * radius`` pixels along the angle,
    stopping (per image) at the first shift that leaves the frame."""
    width = 2 * radius + 1
    steps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(steps**2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    weights = weights / weights.sum()
    radians = torch.deg2rad(angles.double().cpu())
    # -ceil(i * sin - 0.5): the reference's rounding of the i-th step along the angle.
    down = -torch.ceil(steps[None, :] * torch.sin(radians)[:, None] - 0.5).long()
    right = -torch.ceil(steps[None, :] * torch.cos(radians)[:, None] - 0.5).long()
    height, frame_width = images.shape[-2:]
    inside = (down.abs() < height) & (right.abs() < frame_width)
    alive = inside.long().cumprod(dim=1).bool()  # the reference breaks at the first step outside
    blurred = torch.zeros_like(images)
    device = images.device
    for step in range(width):
        if not alive[:, step].any():
            break
        moved = shift_replicate(images, down[:, step].to(device), right[:, step].to(device))
        weight = torch.where(alive[:, step], weights[step], 0.0).to(images)
        blurred = blurred + weight[:, None, None, None] * moved
    return blurred
