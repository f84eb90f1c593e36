"""Tiny dataset files in the real on-disk formats (IDX, gzip, CIFAR's pickled batches), written
byte for byte as the real datasets ship, so that torchvision's own loading code reads them."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torchvision

from iocane.data.raw import RawDataset

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: big-endian magic (0x0000 08 <ndim>: unsigned bytes), dims, then the data."""
    assert array.dtype == np.uint8
    magic = 0x00000800 | array.ndim  # 0x00000803 for (N,H,W) images, 0x00000801 for labels
    return struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes()


def make_idx_data(seed: int, n_train: int = 7, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_idx(directory: Path, data: dict[str, np.ndarray], compress: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in data.items():
        raw = idx_bytes(array)
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)


def assert_matches_idx(raw: RawDataset, data: dict[str, np.ndarray]) -> None:
    assert raw.train_images.dtype == np.uint8 and raw.test_images.dtype == np.uint8
    assert raw.train_labels.dtype == np.int64 and raw.test_labels.dtype == np.int64
    assert raw.train_images.shape == (7, 1, 28, 28)
    assert raw.test_images.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(raw.train_images[:, 0], data["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.train_labels, data["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(raw.test_images[:, 0], data["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.test_labels, data["t10k-labels-idx1-ubyte"])
    assert raw.num_classes == 10 and len(raw.class_names) == 10


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar10(root: Path, seed: int, per_batch: int = 4) -> dict[str, np.ndarray]:
    """The real cifar-10-batches-py layout: pickled dicts with 'data' (N, 3072) in CHW order."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 7):
        name = f"data_batch_{i}" if i <= 5 else "test_batch"
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {
            "batch_label": f"{name} of 6",
            "labels": labels,
            "data": data,
            "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)],
        }
        (base / name).write_bytes(pickle.dumps(batch, protocol=2))
        if i <= 5:
            train_x.append(data)
            train_y.extend(labels)
        else:
            test_x, test_y = data, labels
    meta = {"num_cases_per_batch": per_batch, "label_names": CIFAR_CLASSES, "num_vis": 3072}
    (base / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {
        "train_x": np.concatenate(train_x).reshape(-1, 3, 32, 32),
        "train_y": np.array(train_y),
        "test_x": test_x.reshape(-1, 3, 32, 32),
        "test_y": np.array(test_y),
    }


def use_fixture_checksums(monkeypatch: pytest.MonkeyPatch, base: Path) -> None:
    """Point torchvision's CIFAR10 checksum table at our fixture files.

    torchvision's CIFAR10 refuses files whose md5 differs from the official ones (in
    `_check_integrity` and again in `_load_meta`). Rather than disabling that check, we replace
    only the expected-md5 table with the sums of our tiny files, so torchvision's real integrity
    check and loading code still run (and a corrupted file still fails, see below).
    """
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f, md5_of(base / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5_of(base / f)] for f, _ in cls.test_list])
    meta = dict(cls.meta, md5=md5_of(base / cls.meta["filename"]))
    monkeypatch.setattr(cls, "meta", meta)
