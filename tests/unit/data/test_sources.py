"""iocane.data.sources: the dataset names, the check of where each is read from, and digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iocane.base.errors import DataError
from iocane.data.sources import DATASET_NAMES, check_data_source, load_raw_dataset


def test_unknown_dataset_lists_the_names() -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'") as info:
        load_raw_dataset("imagenet", None)
    for name in DATASET_NAMES:
        assert name in str(info.value)


def test_root_required_without_download() -> None:
    with pytest.raises(DataError, match=r"data\.root"):
        load_raw_dataset("mnist", None)


def test_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as info:
        load_raw_dataset("fashion_mnist", str(missing))
    assert str(missing) in str(info.value)


def test_digits() -> None:
    raw = load_raw_dataset("digits", None)
    assert raw.train_images.shape == (1797, 1, 8, 8)
    assert raw.train_images.dtype == np.float32
    assert raw.train_images.min() == 0.0 and raw.train_images.max() == 1.0
    assert raw.train_labels.shape == (1797,) and raw.train_labels.dtype == np.int64
    assert set(np.unique(raw.train_labels)) == set(range(10))
    assert raw.test_images is None and raw.test_labels is None
    assert raw.num_classes == 10 and len(raw.class_names) == 10


def test_where_each_dataset_is_read_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOCANE_DATA_CACHE", str(tmp_path / "cache"))
    assert check_data_source("digits", "/anything", download=False) is None  # bundled
    # Downloads without a data.root go to iocane's cache.
    assert check_data_source("mnist", None, download=True) == tmp_path / "cache" / "downloads"
    # A root is the real directory: symlinks and .. resolved.
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    root = check_data_source("cifar10", str(tmp_path / "alias" / ".." / "alias"), download=False)
    assert root == (tmp_path / "real").resolve()
