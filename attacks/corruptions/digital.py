"""Digital corruptions (Hendrycks & Dietterich 2019): brightness, contrast, elastic transform,
pixelate and JPEG compression, with the reference's constants and resampling rules."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from attacks.corruptions.filters import apply_axes, gaussian_filter

# Per severity 1..5, as in imagecorruptions.
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to the HSV value
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # share of the distance to the channel mean kept
ELASTIC_ALPHA = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # the side of the coarse image, as a share
JPEG_QUALITY = (25, 18, 15, 10, 7)


def brightness(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Raise the HSV value (the largest channel) by the severity's amount, hue and saturation
    kept: in RGB every channel scales by new/old value, and the largest becomes the new value
    (a black pixel, of no hue, turns gray). One channel: the value is the pixel."""
    value = images.amax(dim=1, keepdim=True)
    raised = (value + BRIGHTNESS[severity - 1]).clamp(0, 1)
    scaled = images * (raised / value.clamp_min(torch.finfo(images.dtype).tiny))
    return torch.where(images == value, raised, scaled)


def contrast(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    means = images.mean(dim=(2, 3), keepdim=True)
    return (images - means) * CONTRAST[severity - 1] + means


def elastic_transform(
    images: torch.Tensor, severity: int, generator: torch.Generator
) -> torch.Tensor:
    """Move every pixel by a smooth random field (uniform noise blurred by a Gaussian of 1% of
    the side, scaled by the severity's alpha), read back with bilinear interpolation and a
    mirrored border (SciPy's ``map_coordinates(order=1, mode="reflect")``)."""
    batch, _, height, width = images.shape
    device = images.device
    largest = height * 0.005  # the reference bounds both axes by the height
    fields = []
    for _axis in range(2):
        uniform = torch.rand(
            (batch, 1, height, width), generator=generator, device=device, dtype=torch.float64
        )
        noise = uniform * 2 * largest - largest
        smooth = gaussian_filter(noise, height * 0.01, width * 0.01, truncate=3.0, mode="symmetric")
        fields.append(smooth[:, 0] * ELASTIC_ALPHA[severity - 1])
    right, down = fields
    rows = torch.arange(height, device=device, dtype=torch.float64)[:, None] + down
    cols = torch.arange(width, device=device, dtype=torch.float64)[None, :] + right
    return _bilinear_mirrored(images, rows, cols)


def _fold(coordinates: torch.Tensor, length: int) -> torch.Tensor:
    """Coordinates mirrored into [-0.5, length - 0.5] (half-sample symmetric)."""
    folded = (coordinates + 0.5).remainder(2 * length)
    return torch.where(folded > length, 2 * length - folded, folded) - 0.5


def _bilinear_mirrored(
    images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    batch, channels, height, width = images.shape
    rows, cols = _fold(rows, height), _fold(cols, width)
    top, left = rows.floor(), cols.floor()
    down_weight, right_weight = (rows - top).to(images), (cols - left).to(images)
    flat = images.reshape(batch, channels, height * width)
    result = torch.zeros_like(flat)
    for row_offset, row_weight in ((0, 1 - down_weight), (1, down_weight)):
        for col_offset, col_weight in ((0, 1 - right_weight), (1, right_weight)):
            # Past the edge the mirror repeats the edge pixel: a clamp, one pixel out.
            row_index = (top.long() + row_offset).clamp(0, height - 1)
            col_index = (left.long() + col_offset).clamp(0, width - 1)
            index = (row_index * width + col_index).reshape(batch, 1, height * width)
            weight = (row_weight * col_weight).reshape(batch, 1, height * width)
            result = result + weight * flat.gather(2, index.expand(batch, channels, -1))
    return result.reshape(images.shape)


def _box_matrix(source: int, target: int) -> torch.Tensor:
    """Pillow's BOX downscale as a (target, source) matrix: each output pixel averages the input
    pixels whose centres fall in its box."""
    scale = source / target
    matrix = torch.zeros(target, source, dtype=torch.float64)
    for out in range(target):
        centre = (out + 0.5) * scale
        first, last = (
            max(int(centre - scale / 2 + 0.5), 0),
            min(int(centre + scale / 2 + 0.5), source),
        )
        for pixel in range(first, last):
            position = (pixel - centre + 0.5) / scale
            matrix[out, pixel] = 1.0 if -0.5 < position <= 0.5 else 0.0
        matrix[out] /= matrix[out].sum()
    return matrix


def _nearest_matrix(source: int, target: int) -> torch.Tensor:
    """Pillow's NEAREST resize as a (target, source) one-hot matrix. Pillow walks the source
    coordinate by adding the step, and the sum's rounding decides ties: so do we."""
    step, position, picks = source / target, source / target * 0.5, []
    for _out in range(target):
        picks.append(min(int(position), source - 1))
        position += step
    return torch.nn.functional.one_hot(torch.tensor(picks), source).double()


def pixelate(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Box-average down to the severity's share of each side, then blow back up by nearest."""
    height, width = images.shape[-2:]
    share = PIXELATE[severity - 1]
    coarse_height, coarse_width = max(int(height * share), 1), max(int(width * share), 1)
    rows = _nearest_matrix(coarse_height, height) @ _box_matrix(height, coarse_height)
    cols = _nearest_matrix(coarse_width, width) @ _box_matrix(width, coarse_width)
    return apply_axes(images, rows, cols)


def jpeg_compression(
    images: torch.Tensor, severity: int, generator: torch.Generator
) -> torch.Tensor:
    """Each image saved as a JPEG of the severity's quality by Pillow (as the reference does; a
    gray image goes through RGB as there) and read back. The only corruption that quantises its
    input to 8 bits and leaves the device: JPEG is an 8-bit codec, per image."""
    quality = JPEG_QUALITY[severity - 1]
    pixels = (
        (images.detach() * 255)
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
        .permute(0, 2, 3, 1)
        .cpu()
        .numpy()
    )
    decoded = [_jpeg_round_trip(image, quality) for image in pixels]
    restored = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    return restored.to(device=images.device, dtype=images.dtype) / 255


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    gray = image.shape[-1] == 1
    picture = Image.fromarray(image[..., 0] if gray else image, "L" if gray else "RGB").convert(
        "RGB"
    )
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    decoded = Image.open(buffer)
    return (
        np.asarray(decoded.convert("L"))[..., None] if gray else np.asarray(decoded.convert("RGB"))
    )
