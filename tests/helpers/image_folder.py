"""Real image folders (torchvision's ImageFolder layout) written with Pillow for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pattern(label: int, index: int, size: tuple[int, int], channels: int) -> np.ndarray:
    """A deterministic uint8 image (H, W) or (H, W, 3) that differs by class and index."""
    width, height = size
    rows, columns = np.mgrid[0:height, 0:width]
    base = (rows * 7 + columns * 3 + label * 60 + index * 11) % 256
    if channels == 1:
        return base.astype(np.uint8)
    return np.stack([base, (base + 85) % 256, (255 - base)], axis=-1).astype(np.uint8)


def write_image(path: Path, pixels: np.ndarray) -> Path:
    """``pixels`` as an image file; the format follows the suffix (PNG is lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog"),
    per_class: int = 6,
    size: tuple[int, int] = (16, 16),
    channels: int = 3,
    suffix: str = ".png",
) -> Path:
    """``root/<class>/<i><suffix>`` for every class: the plain (unsplit) layout."""
    for label, name in enumerate(classes):
        for index in range(per_class):
            write_image(root / name / f"{index:03d}{suffix}", pattern(label, index, size, channels))
    return root


def truncate(path: Path) -> Path:
    """Cut a file to half its bytes: Pillow reads its header but not its pixels."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
