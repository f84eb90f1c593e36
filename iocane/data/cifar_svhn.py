"""CIFAR-10 (torchvision's pickled batches) and SVHN (its ``.mat`` files), read through
torchvision's own dataset classes, with the files and checksums torchvision lists checked first
so that a missing or corrupt file is named in the message."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iocane.base.errors import DataError
from iocane.data.raw import (
    DIGIT_NAMES,
    NUM_CLASSES,
    READ_ERRORS,
    RawDataset,
    require_files,
    validate_split,
)


def load_cifar10(root: Path, download: bool) -> RawDataset:
    """CIFAR-10 from `root`/cifar-10-batches-py, channels first (N, 3, 32, 32) uint8."""
    import torchvision
    from torchvision.datasets.utils import check_integrity

    dataset_cls = torchvision.datasets.CIFAR10
    base = root / dataset_cls.base_folder
    # Read the file list (and md5 sums) from torchvision so we check exactly what it loads.
    checksums = [(f, md5) for f, md5 in dataset_cls.train_list + dataset_cls.test_list]
    checksums.append((dataset_cls.meta["filename"], dataset_cls.meta["md5"]))
    if not download:
        require_files("cifar10", base, [f for f, _ in checksums])

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    class_names: tuple[str, ...] = ()
    for split in ("train", "test"):
        try:
            ds = dataset_cls(str(root), train=split == "train", download=download)
        except READ_ERRORS as exc:
            # torchvision verifies md5 sums before unpickling, so its "not found or corrupted"
            # RuntimeError usually means a checksum mismatch; find the file to name it.
            bad = [f for f, md5 in checksums if not check_integrity(str(base / f), md5)]
            where = f"bad or missing: {', '.join(str(base / f) for f in bad)}" if bad else base
            raise DataError(
                f"cifar10: torchvision could not load the {split} split ({where}): {exc}"
            ) from exc
        # torchvision stores CIFAR as (N, H, W, C) for PIL; we want channels first.
        images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
        labels = np.asarray(ds.targets, dtype=np.int64)
        validate_split("cifar10", split, images, labels, str(base))
        arrays[split] = (images, labels)
        class_names = tuple(str(c) for c in ds.classes)

    if len(class_names) != NUM_CLASSES:
        meta = base / dataset_cls.meta["filename"]
        raise DataError(f"cifar10: {meta} lists {len(class_names)} class names, expected 10")
    return RawDataset.from_splits(arrays, class_names)


def load_svhn(root: Path, download: bool) -> RawDataset:
    """SVHN's train and test splits from `root`/{train,test}_32x32.mat (needs scipy)."""
    import torchvision

    dataset_cls = torchvision.datasets.SVHN
    files = {split: dataset_cls.split_list[split][1] for split in ("train", "test")}
    if not download:
        require_files("svhn", root, list(files.values()))
    try:
        # torchvision imports scipy lazily inside SVHN; fail early with a clear message.
        from scipy.io.matlab import MatReadError
    except ImportError as exc:
        raise DataError("svhn: reading SVHN's .mat files needs scipy (pip install scipy)") from exc

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, filename in files.items():
        path = root / filename
        try:
            ds = dataset_cls(str(root), split=split, download=download)
        except RuntimeError as exc:
            # Raised by torchvision's md5 check, before the file is parsed.
            raise DataError(f"svhn: {path} is missing or fails its checksum: {exc}") from exc
        except (*READ_ERRORS, MatReadError) as exc:
            raise DataError(f"svhn: cannot read {path}: {exc}") from exc
        # torchvision already transposed X from (H, W, C, N) to (N, C, H, W) and mapped the
        # label 10 (used for digit 0) to 0. reshape(-1) undoes squeeze() turning N=1 into 0-d.
        images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8))
        labels = np.asarray(ds.labels, dtype=np.int64).reshape(-1)
        validate_split("svhn", split, images, labels, str(path))
        arrays[split] = (images, labels)

    return RawDataset.from_splits(arrays, DIGIT_NAMES)
