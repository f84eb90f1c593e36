"""Data preparation: load a dataset, split it, fingerprint it, write it under data/prepared.

The prepared arrays are the DVC-tracked output of the ``prepare`` stage, one ``.npy`` file each
in the dataset's own dtype (uint8 images for every image dataset; see ``iocane.data.storage``);
every later stage reads them back through ``load_prepared``, which re-checks the fingerprint
(sha256 of the arrays) so a silently changed file can never be trained or evaluated on, and
memory-maps them. A ``Split`` keeps the images as stored and gives them as float32 in [0, 1] a
batch at a time, so no process holds a float copy of a whole training set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iocane.base.config import Config, DataConfig, ModelConfig
from iocane.base.errors import DataError
from iocane.base.files import read_json, write_json
from iocane.base.layout import Layout
from iocane.data.folder import FolderOptions
from iocane.data.raw import RawDataset
from iocane.data.sources import load_raw_dataset
from iocane.data.storage import file_fingerprints, map_arrays, write_arrays
from models import ModelSpec

log = logging.getLogger("iocane")

SPLITS = ("train", "val", "test")
# Up to this size the channel statistics are computed on one float32 copy of the training images,
# as they always were (so every built-in dataset keeps its figures bit for bit); beyond, in
# float64 over chunks, so that memory stays bounded (see ``channel_statistics``).
STATISTICS_IN_ONE_PASS_BYTES = 1 << 30
STATISTICS_CHUNK_IMAGES = 4096
UNIT_CHUNK_PIXELS = 1 << 24  # convert at most this many uint8 pixels to float32 at once


def dvc_directory_hash(directory: Path) -> str:
    """The version DVC records for a directory output in ``dvc.lock`` (``<md5>.dir``): the md5
    of the sorted JSON listing of its files' md5s. Tagged on registered versions so a reviewer
    can find the data in DVC's cache or remote, whether the run was a flow or ``dvc repro``."""
    files = [path for path in directory.rglob("*") if path.is_file()]
    entries = sorted(
        (
            {
                "md5": _md5_file(path),
                "relpath": path.relative_to(directory).as_posix(),
            }
            for path in files
        ),
        key=lambda entry: entry["relpath"],
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def _md5_file(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "md5").hexdigest()


@dataclass(frozen=True)
class PreparedRef:
    """What flows between tasks: a path and a content hash, never the tensors themselves."""

    path: str
    fingerprint: str


@functools.cache
def _unit_table(device: torch.device) -> torch.Tensor:
    """float32 of each uint8 value p: ``p / 255`` computed by numpy, as ``prepare`` converted
    the images before they were stored as uint8. A lookup rather than a division so that every
    device gives exactly these values (CUDA divides by a host scalar as a multiplication by its
    reciprocal, which can differ in the last bit); one table per device, so that a training
    step never copies it from the host."""
    table = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0
    return torch.from_numpy(table).to(device)


def unit_float(pixels: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 pixels converted (in bounded chunks), float32 as is."""
    if pixels.dtype != torch.uint8:
        return pixels
    table = _unit_table(pixels.device)
    flat = pixels.reshape(-1)
    out = torch.empty(flat.shape, dtype=torch.float32, device=pixels.device)
    for start in range(0, len(flat), UNIT_CHUNK_PIXELS):
        part = slice(start, start + UNIT_CHUNK_PIXELS)
        out[part] = table[flat[part].long()]
    return out.view(pixels.shape)


@dataclass(frozen=True)
class Split:
    """One split's images, as ``prepare`` stored them, and labels. Read the images through
    ``batch`` (a part of the split) or ``images`` (all of it): both give float32 in [0, 1]."""

    pixels: torch.Tensor  # (N, C, H, W): uint8 in 0..255, or float32 in [0, 1] (digits)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> torch.Tensor:
        """The whole split as float32 in [0, 1]: a float copy of uint8 storage, so meant for the
        small splits (validation, test, a subset); training reads ``batch``."""
        return unit_float(self.pixels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return tuple(self.pixels.shape[1:])

    def batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """The images at ``index`` as float32 in [0, 1]."""
        return unit_float(self.pixels[index])

    def to(self, device: torch.device) -> Split:
        return Split(self.pixels.to(device), self.labels.to(device))

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.pixels[index], self.labels[index])


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


def _subsample(indices: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    if size <= 0 or size >= len(indices):
        return indices
    kept, _ = train_test_split(
        indices, train_size=size, stratify=labels[indices], random_state=seed
    )
    return np.sort(kept)


def split_dataset(raw: RawDataset, config: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """Stratified, seeded train/val/test split; an official test split is kept as it is.

    The splits are chosen as positions in the raw arrays and each split's images are gathered
    from them once, so the images are never copied twice (a large folder's uint8 arrays are
    the biggest thing ``prepare`` holds)."""
    from sklearn.model_selection import train_test_split  # slow to import; only prepare needs it

    if raw.val_images is not None and raw.test_images is not None:
        return _official_splits(raw, config, seed)
    labels = raw.train_labels
    pool_source = np.arange(len(labels))  # where each pool image is in raw.train_images
    if raw.test_images is None:
        pool_source, test_source = train_test_split(
            pool_source, test_size=config.test_fraction, stratify=labels, random_state=seed
        )
        test_images, test_labels = raw.train_images, labels
    else:
        test_images, test_labels = raw.test_images, raw.test_labels
        test_source = np.arange(len(test_labels))
    pool_labels = labels[pool_source]
    pool = _subsample(np.arange(len(pool_labels)), pool_labels, config.limit_train, seed)
    train, val = train_test_split(
        pool, test_size=config.val_fraction, stratify=pool_labels[pool], random_state=seed
    )
    test = test_source[
        _subsample(np.arange(len(test_source)), test_labels[test_source], config.limit_test, seed)
    ]
    train, val = pool_source[train], pool_source[val]
    return {
        "train_images": raw.train_images[train],
        "train_labels": labels[train],
        "val_images": raw.train_images[val],
        "val_labels": labels[val],
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
        if len(kept) < len(labels):  # a whole split is kept as it is, not copied
            images, labels = images[kept], labels[kept]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def _as_unit_float(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (at least 1e-3) of (N, C, H, W) images in [0, 1] units.

    Up to ``STATISTICS_IN_ONE_PASS_BYTES`` of float32 they are computed on one float32 copy, as
    they always were: every built-in dataset keeps its figures, and so its trained models, bit
    for bit. Larger image sets (a big folder) would need two float copies of the training split
    that way; they are computed in float64 over chunks of images instead, two passes (mean, then
    the squared deviations), and rounded to float32 like the in-memory figures."""
    if images.size * 4 <= STATISTICS_IN_ONE_PASS_BYTES:
        unit = _as_unit_float(images)
        return (
            unit.mean(axis=(0, 2, 3)).tolist(),
            unit.std(axis=(0, 2, 3)).clip(min=1e-3).tolist(),
        )
    count = images.shape[0] * images.shape[2] * images.shape[3]
    starts = range(0, len(images), STATISTICS_CHUNK_IMAGES)

    def chunk(start: int) -> np.ndarray:
        return _as_unit_float(images[start : start + STATISTICS_CHUNK_IMAGES]).astype(np.float64)

    mean = sum(chunk(start).sum(axis=(0, 2, 3)) for start in starts) / count
    centred = (chunk(start) - mean[None, :, None, None] for start in starts)
    variance = sum((block**2).sum(axis=(0, 2, 3)) for block in centred) / count
    return (
        mean.astype(np.float32).tolist(),
        np.sqrt(variance).astype(np.float32).clip(min=1e-3).tolist(),
    )


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


def _load_and_split(config: Config) -> tuple[dict[str, np.ndarray], dict]:
    """The split arrays and what ``meta.json`` says of the dataset; the raw arrays are let go
    on return, so only the split copies stay in memory."""
    raw = load_raw_dataset(
        config.data.dataset,
        config.data.root,
        download=config.data.download,
        folder=FolderOptions(
            image_size=config.data.image_size,
            channels=config.data.channels,
            on_bad_image=config.data.on_bad_image,
            on_small_image=config.data.on_small_image,
        ),
    )
    arrays = _split_or_explain(raw, config)
    about = {"num_classes": raw.num_classes, "class_names": list(raw.class_names)}
    if raw.skipped_images is not None:  # the folder dataset: how many files it could not read
        about["skipped_images"] = raw.skipped_images
    if raw.resized_up_images is not None:  # and how many it scaled up to data.image_size
        about["resized_up_images"] = raw.resized_up_images
    return arrays, about


def prepare_data(config: Config, layout: Layout) -> PreparedRef:
    """The ``prepare`` stage: load, split, fingerprint and write data/prepared."""
    arrays, about = _load_and_split(config)
    for split in SPLITS:
        if len(arrays[f"{split}_labels"]) == 0:
            raise DataError(f"{config.data.dataset}: the {split} split is empty")
    mean, std = channel_statistics(arrays["train_images"])
    # meta.json goes first and comes back last: a prepare stopped half way leaves no meta.json,
    # so its arrays are never read as valid. arrays.npz is where arrays were kept before.
    layout.prepared_meta.unlink(missing_ok=True)
    (layout.prepared_dir / "arrays.npz").unlink(missing_ok=True)
    write_arrays(layout.prepared_arrays, arrays)
    fingerprint, files = file_fingerprints(layout.prepared_arrays)
    meta = {
        "dataset": config.data.dataset,
        "fingerprint": fingerprint,
        "num_classes": about["num_classes"],
        "class_names": about["class_names"],
        "in_channels": int(arrays["train_images"].shape[1]),
        "image_size": int(arrays["train_images"].shape[2]),
        # Per-channel statistics of the training images: the model normalises with them.
        "mean": mean,
        "std": std,
        "counts": {split: len(arrays[f"{split}_labels"]) for split in SPLITS},
        "files": files,  # each array file's sha256, so that a changed one can be named
    }
    for count in ("skipped_images", "resized_up_images"):  # the folder dataset's counts
        if count in about:
            meta[count] = about[count]
    write_json(layout.prepared_meta, meta)
    log.info(
        "prepared %s: train %d, val %d, test %d images; fingerprint %s",
        config.data.dataset,
        *meta["counts"].values(),
        fingerprint[:12],
    )
    return PreparedRef(path=str(layout.prepared_dir), fingerprint=fingerprint)


def load_prepared(layout: Layout) -> PreparedData:
    """data/prepared, memory-mapped (images stay as stored; a ``Split`` converts them a batch
    at a time), refusing arrays whose fingerprint changed."""
    meta = read_json(layout.prepared_meta)
    paths = layout.prepared_arrays
    fingerprint, files = file_fingerprints(paths)
    if fingerprint != meta["fingerprint"]:
        recorded = meta.get("files", {})
        changed = [
            str(path) for path in paths.values() if files[path.name] != recorded.get(path.name)
        ]
        raise DataError(
            f"{', '.join(changed) or layout.prepared_dir} does not match the fingerprint in "
            f"{layout.prepared_meta}: the prepared data changed after the prepare stage; "
            "run it again"
        )
    arrays = map_arrays(paths)

    def split(name: str) -> Split:
        labels = np.asarray(arrays[f"{name}_labels"], dtype=np.int64)
        return Split(torch.from_numpy(arrays[f"{name}_images"]), torch.from_numpy(labels))

    return PreparedData(split("train"), split("val"), split("test"), meta)
