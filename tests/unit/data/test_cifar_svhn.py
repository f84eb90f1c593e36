"""iocane.data.cifar_svhn: CIFAR-10's pickled batches and SVHN's .mat files, written in the real
formats and read through torchvision with its own checksum check (against our files' sums)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torchvision

from iocane.base.errors import DataError
from iocane.data.sources import load_raw_dataset
from tests.helpers.dataset_files import (
    CIFAR_CLASSES,
    md5_of,
    use_fixture_checksums,
    write_cifar10,
)


def test_cifar10_real_pickle_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = write_cifar10(tmp_path, seed=7)
    use_fixture_checksums(monkeypatch, tmp_path / "cifar-10-batches-py")

    raw = load_raw_dataset("cifar10", str(tmp_path))

    assert raw.train_images.shape == (20, 3, 32, 32) and raw.train_images.dtype == np.uint8
    assert raw.test_images.shape == (4, 3, 32, 32)
    assert raw.train_images.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(raw.train_images, expected["train_x"])
    np.testing.assert_array_equal(raw.test_images, expected["test_x"])
    assert raw.train_labels.dtype == np.int64
    np.testing.assert_array_equal(raw.train_labels, expected["train_y"])
    np.testing.assert_array_equal(raw.test_labels, expected["test_y"])
    assert raw.class_names == tuple(CIFAR_CLASSES)


def test_cifar10_checksum_mismatch_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar10(tmp_path, seed=8)
    base = tmp_path / "cifar-10-batches-py"
    use_fixture_checksums(monkeypatch, base)
    corrupt = base / "data_batch_3"
    corrupt.write_bytes(corrupt.read_bytes()[:-10])

    with pytest.raises(DataError, match="data_batch_3") as info:
        load_raw_dataset("cifar10", str(tmp_path))
    assert "data_batch_1" not in str(info.value)


def test_cifar10_missing_files_are_listed(tmp_path: Path) -> None:
    write_cifar10(tmp_path, seed=9)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    missing = r"files missing in .*cifar-10-batches-py .data.root.: test_batch"
    with pytest.raises(DataError, match=missing):
        load_raw_dataset("cifar10", str(tmp_path))


def test_svhn_real_mat_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sio = pytest.importorskip("scipy.io", reason="torchvision reads SVHN's .mat files with scipy")
    rng = np.random.default_rng(10)
    expected = {}
    for split, n in (("train", 6), ("test", 3)):
        # Real SVHN: X is (H, W, C, N) uint8, y is (N, 1) with 10 standing for the digit 0.
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [9], [10], [5]][:n], dtype=np.uint8)
        sio.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        expected[split] = (x.transpose(3, 2, 0, 1), np.where(y[:, 0] == 10, 0, y[:, 0]))

    # Same reason as for CIFAR-10: swap in our files' md5 sums, keep torchvision's check.
    split_list = {k: list(v) for k, v in torchvision.datasets.SVHN.split_list.items()}
    for split in ("train", "test"):
        split_list[split][2] = md5_of(tmp_path / f"{split}_32x32.mat")
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", split_list)

    raw = load_raw_dataset("svhn", str(tmp_path))

    assert raw.train_images.shape == (6, 3, 32, 32) and raw.train_images.dtype == np.uint8
    assert raw.test_images.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(raw.train_images, expected["train"][0])
    np.testing.assert_array_equal(raw.test_images, expected["test"][0])
    assert raw.train_labels.dtype == np.int64
    np.testing.assert_array_equal(raw.train_labels, [0, 1, 2, 9, 0, 5])
    np.testing.assert_array_equal(raw.test_labels, [0, 1, 2])
