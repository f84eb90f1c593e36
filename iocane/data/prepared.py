"""Data preparation: load a dataset, split it, fingerprint it, write it under data/prepared.

The prepared arrays are the DVC-tracked output of the ``prepare`` stage; every later stage
reads them back through ``load_prepared``, which re-checks the fingerprint (sha256 of the
arrays) so a silently changed file can never be trained or evaluated on.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iocane.config import Config, DataConfig, ModelConfig
from iocane.data.folder import FolderOptions
from iocane.data.raw import RawDataset
from iocane.data.sources import load_raw_dataset
from iocane.errors import DataError
from iocane.files import read_json, write_atomic, write_json
from iocane.layout import Layout
from models import ModelSpec

log = logging.getLogger("iocane")

SPLITS = ("train", "val", "test")


def dvc_directory_hash(directory: Path) -> str:
    """The version DVC records for a directory output in ``dvc.lock`` (``<md5>.dir``): the md5
    of the sorted JSON listing of its files' md5s. Tagged on registered versions so a reviewer
    can find the data in DVC's cache or remote, whether the run was a flow or ``dvc repro``."""
    files = [path for path in directory.rglob("*") if path.is_file()]
    entries = sorted(
        (
            {
                "md5": hashlib.md5(path.read_bytes()).hexdigest(),
                "relpath": path.relative_to(directory).as_posix(),
            }
            for path in files
        ),
        key=lambda entry: entry["relpath"],
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


@dataclass(frozen=True)
class PreparedRef:
    """What flows between tasks: a path and a content hash, never the tensors themselves."""

    path: str
    fingerprint: str


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # float32 (N, C, H, W) in [0, 1]
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class PreparedData:
    train: Split
    val: Split
    test: Split
    meta: dict

    def model_spec(self, model: ModelConfig) -> ModelSpec:
        return ModelSpec(
            name=model.name,
            in_channels=self.meta["in_channels"],
            image_size=self.meta["image_size"],
            num_classes=self.meta["num_classes"],
            mean=tuple(self.meta["mean"]),
            std=tuple(self.meta["std"]),
            width=model.width,
            depth=model.depth,
        )


def fingerprint_arrays(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _subsample(indices: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    if size <= 0 or size >= len(indices):
        return indices
    kept, _ = train_test_split(
        indices, train_size=size, stratify=labels[indices], random_state=seed
    )
    return np.sort(kept)


def split_dataset(raw: RawDataset, config: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """Stratified, seeded train/val/test split; an official test split is kept as it is."""
    from sklearn.model_selection import train_test_split  # slow to import; only prepare needs it

    pool_images, pool_labels = raw.train_images, raw.train_labels
    if raw.val_images is not None and raw.test_images is not None:
        return _official_splits(raw, config, seed)
    if raw.test_images is None:
        everything = np.arange(len(pool_labels))
        pool, test = train_test_split(
            everything, test_size=config.test_fraction, stratify=pool_labels, random_state=seed
        )
        test_images, test_labels = pool_images[test], pool_labels[test]
        pool_images, pool_labels = pool_images[pool], pool_labels[pool]
    else:
        test_images, test_labels = raw.test_images, raw.test_labels
    pool = _subsample(np.arange(len(pool_labels)), pool_labels, config.limit_train, seed)
    train, val = train_test_split(
        pool, test_size=config.val_fraction, stratify=pool_labels[pool], random_state=seed
    )
    test = _subsample(np.arange(len(test_labels)), test_labels, config.limit_test, seed)
    return {
        "train_images": pool_images[train],
        "train_labels": pool_labels[train],
        "val_images": pool_images[val],
        "val_labels": pool_labels[val],
        "test_images": test_images[test],
        "test_labels": test_labels[test],
    }


def _official_splits(raw: RawDataset, config: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """A folder with its own train/, val/ and test/: kept, subsampled only by the limits."""
    splits = {
        "train": (raw.train_images, raw.train_labels, config.limit_train),
        "val": (raw.val_images, raw.val_labels, 0),
        "test": (raw.test_images, raw.test_labels, config.limit_test),
    }
    arrays = {}
    for split, (images, labels, limit) in splits.items():
        kept = _subsample(np.arange(len(labels)), labels, limit, seed)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[kept], labels[kept]
    return arrays


def _as_unit_float(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


def _split_or_explain(raw: RawDataset, config: Config) -> dict[str, np.ndarray]:
    """``split_dataset``, with scikit-learn's refusal of a too-small class (a stratified split
    needs at least two images of each class on each side) said as a DataError."""
    try:
        return split_dataset(raw, config.data, config.seed)
    except ValueError as error:
        if config.data.dataset != "folder":
            raise
        raise DataError(
            f"folder: cannot split {config.data.root} into train/val/test by class: {error} "
            "(add images to the smallest class, or give train/ and test/ folders)"
        ) from None


def prepare_data(config: Config, layout: Layout) -> PreparedRef:
    """The ``prepare`` stage: load, split, fingerprint and write data/prepared."""
    raw = load_raw_dataset(
        config.data.dataset,
        config.data.root,
        download=config.data.download,
        folder=FolderOptions(
            image_size=config.data.image_size,
            channels=config.data.channels,
            on_bad_image=config.data.on_bad_image,
        ),
    )
    arrays = _split_or_explain(raw, config)
    for split in SPLITS:
        if len(arrays[f"{split}_labels"]) == 0:
            raise DataError(f"{config.data.dataset}: the {split} split is empty")
    train_images = _as_unit_float(arrays["train_images"])
    fingerprint = fingerprint_arrays(arrays)
    meta = {
        "dataset": config.data.dataset,
        "fingerprint": fingerprint,
        "num_classes": raw.num_classes,
        "class_names": list(raw.class_names),
        "in_channels": int(train_images.shape[1]),
        "image_size": int(train_images.shape[2]),
        # Per-channel statistics of the training images: the model normalises with them.
        "mean": train_images.mean(axis=(0, 2, 3)).tolist(),
        "std": train_images.std(axis=(0, 2, 3)).clip(min=1e-3).tolist(),
        "counts": {split: len(arrays[f"{split}_labels"]) for split in SPLITS},
    }
    if raw.skipped_images is not None:  # the folder dataset: how many files it could not read
        meta["skipped_images"] = raw.skipped_images

    def save(stream: io.BufferedIOBase) -> None:
        np.savez(stream, **arrays)

    write_atomic(layout.prepared_arrays, save)
    write_json(layout.prepared_meta, meta)
    log.info(
        "prepared %s: train %d, val %d, test %d images; fingerprint %s",
        config.data.dataset,
        *meta["counts"].values(),
        fingerprint[:12],
    )
    return PreparedRef(path=str(layout.prepared_dir), fingerprint=fingerprint)


def load_prepared(layout: Layout) -> PreparedData:
    """Read data/prepared back as float tensors, refusing arrays whose fingerprint changed."""
    meta = read_json(layout.prepared_meta)
    try:
        with np.load(layout.prepared_arrays, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise DataError(f"{layout.prepared_arrays} is missing: run the prepare stage") from None
    except (OSError, ValueError) as error:
        raise DataError(f"{layout.prepared_arrays} is unreadable: {error}") from None
    if fingerprint_arrays(arrays) != meta["fingerprint"]:
        raise DataError(
            f"{layout.prepared_arrays} does not match the fingerprint in {layout.prepared_meta}: "
            "the prepared data changed after the prepare stage; run it again"
        )

    def split(name: str) -> Split:
        images = torch.from_numpy(_as_unit_float(arrays[f"{name}_images"]))
        return Split(images, torch.from_numpy(arrays[f"{name}_labels"].astype(np.int64)))

    return PreparedData(split("train"), split("val"), split("test"), meta)
