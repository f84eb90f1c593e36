"""What every raw loader returns and checks: the `RawDataset` value, the shapes and label range
each dataset must have, and the errors torchvision's readers raise on bad files.

The loaders themselves live beside this module (`sources` dispatches to them): `idx` for MNIST
and Fashion-MNIST, `cifar_svhn` for CIFAR-10 and SVHN, `folder` for the user's image folder.
"""

from __future__ import annotations

import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iocane.base.errors import DataError

# (C, H, W) each dataset must have: the model architectures are built for these sizes, so a
# file with other dimensions is an error here rather than a shape mismatch deep in training.
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "svhn": (3, 32, 32),
}
NUM_CLASSES = 10  # all five datasets have ten classes
DIGIT_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))

# Errors torchvision's readers raise on bad files. Its IDX reader checks the magic number with a
# bare `assert` and reports wrong dtypes/dimensions as TypeError/ValueError; truncated data shows
# up as RuntimeError from `tensor.view`; CIFAR's pickles raise UnpicklingError/EOFError/KeyError.
# Listed explicitly so that genuine bugs (AttributeError, NameError, ...) still surface as such.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AssertionError,
    zlib.error,
    pickle.UnpicklingError,
)


@dataclass(frozen=True)
class RawDataset:
    """Whole splits of one dataset, before any train/validation split or normalisation."""

    train_images: np.ndarray  # uint8 (N,C,H,W) for torchvision sets; float32 in [0,1] for digits
    train_labels: np.ndarray  # int64 (N,)
    test_images: np.ndarray | None  # None for digits (no official split)
    test_labels: np.ndarray | None
    num_classes: int
    class_names: tuple[str, ...]
    # Only the folder dataset has these: its own val/ split, how many files it skipped, and how
    # many it scaled up to data.image_size (data.on_small_image: resize).
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    skipped_images: int | None = None
    resized_up_images: int | None = None

    @classmethod
    def from_splits(
        cls, arrays: dict[str, tuple[np.ndarray, np.ndarray]], class_names: tuple[str, ...]
    ) -> RawDataset:
        """A ten-class dataset from its official ``train`` and ``test`` (images, labels)."""
        return cls(
            train_images=arrays["train"][0],
            train_labels=arrays["train"][1],
            test_images=arrays["test"][0],
            test_labels=arrays["test"][1],
            num_classes=NUM_CLASSES,
            class_names=class_names,
        )


def require_files(name: str, directory: Path, filenames: list[str]) -> None:
    """DataError naming every file of `filenames` missing in `directory`."""
    missing = [f for f in filenames if not (directory / f).is_file()]
    if missing:
        raise DataError(
            f"{name}: files missing in {directory} (data.root): {', '.join(missing)} "
            f"(expected {', '.join(filenames)})"
        )


def validate_split(
    name: str, split: str, images: np.ndarray, labels: np.ndarray, source: str
) -> None:
    """Reject empty splits, unexpected image shapes and labels outside [0, num_classes)."""
    c, h, w = IMAGE_SHAPES[name]
    if images.ndim != 4 or tuple(images.shape[1:]) != (c, h, w):
        raise DataError(
            f"{name}: {split} images from {source} have shape {tuple(images.shape)}; "
            f"expected (N, {c}, {h}, {w})"
        )
    if labels.shape != (images.shape[0],):
        raise DataError(
            f"{name}: {split} split from {source} has {images.shape[0]} images "
            f"but labels of shape {tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise DataError(f"{name}: the {split} split from {source} is empty")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= NUM_CLASSES:
        raise DataError(
            f"{name}: {split} labels from {source} range over [{low}, {high}], "
            f"outside [0, {NUM_CLASSES})"
        )
