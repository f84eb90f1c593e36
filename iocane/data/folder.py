"""The ``folder`` dataset: the user's own images in torchvision's ``ImageFolder`` layout.

``data.root`` holds one subfolder per class (class names are the folder names, sorted), each
holding images in any format Pillow reads. When the root holds ``train/`` and ``test/`` (and
optionally ``val/``) subfolders, each of those is such a class layout and they are the splits.

Files are discovered with torchvision's ``ImageFolder`` helpers (``find_classes`` and its list
of image extensions) and decoded with Pillow in two passes: the first reads only the headers
(mode and size, cheap) to decide the channel count and check the sizes, the second decodes each
image, converts it to ``L`` or ``RGB``, and makes it ``data.image_size`` square with torchvision's
own ``Resize(image_size)`` and ``CenterCrop(image_size)`` on the PIL image (the shorter side
scaled, Pillow bilinear and antialiased, the longer side truncated; the crop box at
``round((side - image_size) / 2)``): a user's pipeline built from those transforms sees the same
pixels, so iocane's clean accuracy of the user's model is the user's own figure. An image smaller
than ``data.image_size`` is scaled up the same way (``data.on_small_image: resize``, counted and
logged) or refused (``fail``). Images come back uint8 (N, C, S, S) like the torchvision sets, so
the rest of ``prepare`` treats them alike.

Every problem with the folder is a ``DataError`` naming the path involved.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes
from torchvision.transforms.functional import center_crop, resize

from iocane.base.errors import DataError
from iocane.data.raw import RawDataset

log = logging.getLogger("iocane")

SPLIT_DIRS = ("train", "val", "test")
# Pillow modes with one colour channel; everything else (RGB, RGBA, P, CMYK, ...) is colour.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
# What Pillow raises on a file it cannot read or finish reading (a truncated file is OSError).
IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)
PROGRESS_SECONDS = 5.0  # at most one progress line this often on long reads


@dataclass(frozen=True)
class FolderOptions:
    """How to read the images (``data.image_size``, ``data.channels``, ``data.on_bad_image``,
    ``data.on_small_image``)."""

    image_size: int = 0  # 0 = keep (all images must share one square size)
    channels: int = 0  # 0 = infer: 1 when every image is grayscale, else 3
    on_bad_image: str = "fail"  # or "skip"
    on_small_image: str = "resize"  # or "fail"


@dataclass(frozen=True)
class FolderLayout:
    """The files of each split, as (path, class index) in a fixed order, and the class names."""

    splits: dict[str, list[tuple[Path, int]]]
    class_names: tuple[str, ...]


def discover(root: Path) -> FolderLayout:
    """The image files under ``root`` and their classes; DataError for a missing root, an empty
    class folder, fewer than two classes, or split folders with different class sets."""
    if not root.is_dir():
        raise DataError(f"folder: data directory {root} (data.root) does not exist")
    if (root / "train").is_dir() and (root / "test").is_dir():
        split_roots = {s: root / s for s in SPLIT_DIRS if (root / s).is_dir()}
    else:
        split_roots = {"train": root}
    class_sets = {split: _class_names(path) for split, path in split_roots.items()}
    names = class_sets["train"]
    for split, other in class_sets.items():
        if other != names:
            differ = sorted(set(names) ^ set(other))
            raise DataError(
                f"folder: {split_roots[split]} and {split_roots['train']} hold different "
                f"classes (differing: {', '.join(differ)}); every split needs the same classes"
            )
    splits = {split: _files(path, names) for split, path in split_roots.items()}
    return FolderLayout(splits=splits, class_names=names)


def _class_names(directory: Path) -> tuple[str, ...]:
    try:
        names, _ = find_classes(str(directory))
    except FileNotFoundError:
        raise DataError(
            f"folder: {directory} holds no class folders; expected one subfolder per class"
        ) from None
    if len(names) < 2:
        raise DataError(
            f"folder: {directory} holds a single class folder ({names[0]}); "
            "a classifier needs at least two classes"
        )
    return tuple(names)


def _files(directory: Path, names: tuple[str, ...]) -> list[tuple[Path, int]]:
    files: list[tuple[Path, int]] = []
    for index, name in enumerate(names):
        found = sorted(
            path
            for path in (directory / name).rglob("*")
            if path.is_file() and path.name.lower().endswith(IMG_EXTENSIONS)
        )
        if not found:
            raise DataError(
                f"folder: class folder {directory / name} holds no images "
                f"(extensions read: {', '.join(IMG_EXTENSIONS)})"
            )
        files.extend((path, index) for path in found)
    return files


def load_image_folder(root: Path, options: FolderOptions) -> RawDataset:
    """The folder at ``root`` as uint8 arrays, one split per split folder (see module doc)."""
    layout = discover(root)
    bad: list[Path] = []
    headers = {split: _read_headers(files, options, bad) for split, files in layout.splits.items()}
    every = [header for split in headers.values() for header in split]
    if not every:
        raise DataError(f"folder: no readable image under {root}")
    channels = options.channels or (1 if all(h.mode in GRAYSCALE_MODES for h in every) else 3)
    side = _output_side(every, options)
    resized_up = sum(min(header.size) < side for header in every)
    if resized_up:
        log.info(
            "folder: scaled up %d image(s) smaller than data.image_size %d "
            "(data.on_small_image: resize), first %s",
            resized_up,
            side,
            next(header.path for header in every if min(header.size) < side),
        )
    arrays = {
        split: _decode(found, channels=channels, side=side, options=options, bad=bad)
        for split, found in headers.items()
    }
    if bad:
        log.warning(
            "folder: skipped %d unreadable image(s) (data.on_bad_image: skip), first %s",
            len(bad),
            bad[0],
        )
    for split, (_, labels) in arrays.items():
        present = set(np.unique(labels).tolist())
        for index, name in enumerate(layout.class_names):
            if index not in present:  # every image of the class was skipped
                raise DataError(f"folder: no readable image left in the {split} class {name}")
    return RawDataset(
        train_images=arrays["train"][0],
        train_labels=arrays["train"][1],
        test_images=arrays["test"][0] if "test" in arrays else None,
        test_labels=arrays["test"][1] if "test" in arrays else None,
        num_classes=len(layout.class_names),
        class_names=layout.class_names,
        val_images=arrays["val"][0] if "val" in arrays else None,
        val_labels=arrays["val"][1] if "val" in arrays else None,
        skipped_images=len(bad),
        resized_up_images=resized_up,
    )


@dataclass(frozen=True)
class _Header:
    path: Path
    label: int
    mode: str
    size: tuple[int, int]  # (width, height)


def _bad_image(path: Path, error: BaseException, options: FolderOptions, bad: list[Path]) -> None:
    if options.on_bad_image != "skip":
        raise DataError(
            f"folder: cannot read image {path}: {error} "
            "(fix or remove it, or set data.on_bad_image: skip)"
        )
    bad.append(path)


def _read_headers(
    files: list[tuple[Path, int]], options: FolderOptions, bad: list[Path]
) -> list[_Header]:
    headers = []
    for path, label in files:
        try:
            with Image.open(path) as image:
                headers.append(_Header(path, label, image.mode, image.size))
        except IMAGE_ERRORS as error:
            _bad_image(path, error, options, bad)
    return headers


def _output_side(headers: list[_Header], options: FolderOptions) -> int:
    """The side of the square images ``prepare`` writes; DataError when it cannot be had."""
    image_size = options.image_size
    if image_size == 0:
        sizes = {h.size for h in headers}
        first = headers[0]
        if len(sizes) > 1:
            other = next(h for h in headers if h.size != first.size)
            raise DataError(
                f"folder: images differ in size ({first.path} is {_wxh(first.size)}, "
                f"{other.path} is {_wxh(other.size)}); set data.image_size to resize them"
            )
        width, height = first.size
        if width != height:
            raise DataError(
                f"folder: images are {_wxh(first.size)} ({first.path}), not square; "
                "set data.image_size to resize and centre-crop them"
            )
        return width
    small = next((h for h in headers if min(h.size) < image_size), None)
    if small is not None and options.on_small_image == "fail":
        raise DataError(
            f"folder: image {small.path} is {_wxh(small.size)}, smaller than "
            f"data.image_size {image_size} (data.on_small_image: fail; resize scales it up)"
        )
    return image_size


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _decode(
    headers: list[_Header], *, channels: int, side: int, options: FolderOptions, bad: list[Path]
) -> tuple[np.ndarray, np.ndarray]:
    """Decode, convert, resize and crop every image into one preallocated uint8 array."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never grey pixels
    images = np.empty((len(headers), channels, side, side), dtype=np.uint8)
    labels = np.empty(len(headers), dtype=np.int64)
    kept = 0
    last_report = time.monotonic()
    for position, header in enumerate(headers):
        try:
            pixels = _pixels(header.path, channels=channels, side=side)
        except IMAGE_ERRORS as error:
            _bad_image(header.path, error, options, bad)
            continue
        images[kept] = pixels
        labels[kept] = header.label
        kept += 1
        if time.monotonic() - last_report >= PROGRESS_SECONDS:
            last_report = time.monotonic()
            log.info("folder: read %d of %d images", position + 1, len(headers))
    return images[:kept], labels[:kept]


def _pixels(path: Path, *, channels: int, side: int) -> np.ndarray:
    """One image as uint8 (C, side, side): converted, then torchvision's ``Resize(side)`` and
    ``CenterCrop(side)`` on the PIL image (the functions those transforms call, so the pixels
    are the user's torchvision pipeline's, up or down; a no-op at the size already)."""
    with Image.open(path) as opened:
        image = opened.convert("L" if channels == 1 else "RGB")  # decodes the whole file
    image = center_crop(resize(image, [side]), [side, side])
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
