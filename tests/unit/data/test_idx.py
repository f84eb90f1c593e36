"""iocane.data.idx: MNIST and Fashion-MNIST from tiny IDX files in each layout, read through
torchvision, and the messages that name a bad file. No test touches the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torchvision

from iocane.base.errors import DataError
from iocane.data.sources import load_raw_dataset
from tests.helpers.dataset_files import (
    IDX_NAMES,
    assert_matches_idx,
    idx_bytes,
    make_idx_data,
    write_idx,
)


@pytest.mark.parametrize(
    ("name", "class_dir"), [("fashion_mnist", "FashionMNIST"), ("mnist", "MNIST")]
)
def test_debian_flat_gz_layout_loads_through_torchvision(
    tmp_path: Path, cache_dir: Path, idx_reads: list[str], name: str, class_dir: str
) -> None:
    root = tmp_path / "fashion-mnist"
    data = make_idx_data(seed=1)
    write_idx(root, data, compress=True)

    raw = load_raw_dataset(name, str(root))

    assert_matches_idx(raw, data)
    tv_cls = getattr(torchvision.datasets, class_dir)
    assert raw.class_names == tuple(tv_cls.classes)
    (cache_root,) = cache_dir.iterdir()
    cached = cache_root / class_dir / "raw"
    assert sorted(p.name for p in cached.iterdir()) == sorted(IDX_NAMES)  # no temp files left
    assert idx_reads == [
        str(cached / "train-images-idx3-ubyte"),
        str(cached / "t10k-images-idx3-ubyte"),
    ]
    assert (cached / "train-images-idx3-ubyte").read_bytes() == idx_bytes(
        data["train-images-idx3-ubyte"]
    )


def test_flat_uncompressed_layout_loads(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "plain"
    data = make_idx_data(seed=5)
    write_idx(root, data, compress=False)
    assert_matches_idx(load_raw_dataset("mnist", str(root)), data)


def test_torchvision_layout_loads_without_cache(
    tmp_path: Path, cache_dir: Path, idx_reads: list[str]
) -> None:
    data = make_idx_data(seed=6)
    raw_dir = tmp_path / "FashionMNIST" / "raw"
    write_idx(raw_dir, data, compress=False)

    raw = load_raw_dataset("fashion_mnist", str(tmp_path))

    assert_matches_idx(raw, data)
    assert not cache_dir.exists()  # torchvision read the files in place
    assert idx_reads[0] == str(raw_dir / "train-images-idx3-ubyte")


def test_truncated_idx_names_the_file(tmp_path: Path) -> None:
    raw_dir = tmp_path / "MNIST" / "raw"
    write_idx(raw_dir, make_idx_data(seed=12), compress=False)
    broken = raw_dir / "t10k-images-idx3-ubyte"
    broken.write_bytes(broken.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        load_raw_dataset("mnist", str(tmp_path))
    assert str(broken) in str(info.value)


def test_wrong_magic_names_the_file(tmp_path: Path) -> None:
    raw_dir = tmp_path / "MNIST" / "raw"
    write_idx(raw_dir, make_idx_data(seed=13), compress=False)
    labels = raw_dir / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])
    with pytest.raises(DataError, match="not an IDX label file") as info:
        load_raw_dataset("mnist", str(tmp_path))
    assert str(labels) in str(info.value)


def test_missing_files_are_listed(tmp_path: Path, cache_dir: Path) -> None:
    data = make_idx_data(seed=14)
    del data["t10k-labels-idx1-ubyte"]
    write_idx(tmp_path, data, compress=True)
    with pytest.raises(DataError) as info:
        load_raw_dataset("fashion_mnist", str(tmp_path))
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte[.gz]" in message
    assert "train-images-idx3-ubyte[.gz]" not in message.split(";")[0]  # present, not missing
    assert str(tmp_path / "FashionMNIST" / "raw") in message


def test_empty_split(tmp_path: Path, cache_dir: Path) -> None:
    write_idx(tmp_path, make_idx_data(seed=16, n_test=0), compress=True)
    with pytest.raises(
        DataError, match="t10k-images-idx3-ubyte holds no items; the split is empty"
    ):
        load_raw_dataset("mnist", str(tmp_path))


def test_labels_out_of_range(tmp_path: Path, cache_dir: Path) -> None:
    data = make_idx_data(seed=15)
    data["train-labels-idx1-ubyte"][3] = 12
    write_idx(tmp_path, data, compress=True)
    with pytest.raises(
        DataError, match=r"train labels .* range over \[\d+, 12\], outside \[0, 10\)"
    ):
        load_raw_dataset("fashion_mnist", str(tmp_path))


def test_wrong_image_size(tmp_path: Path, cache_dir: Path) -> None:
    data = make_idx_data(seed=17)
    data["train-images-idx3-ubyte"] = np.zeros((7, 32, 32), dtype=np.uint8)
    write_idx(tmp_path, data, compress=True)
    with pytest.raises(DataError, match=r"shape \(7, 1, 32, 32\); expected \(N, 1, 28, 28\)"):
        load_raw_dataset("mnist", str(tmp_path))
