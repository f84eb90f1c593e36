"""Tests for iocane.data.sources: tiny files in the real on-disk formats, read through torchvision.

No test touches the network: every file is written into tmp_path byte for byte in the format
the real dataset ships in (IDX, gzip, CIFAR's pickled batches, SVHN's MATLAB .mat files).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torchvision
import torchvision.datasets.mnist as tv_mnist

from iocane.data.sources import DATASET_NAMES, DataError, RawDataset, load_raw_dataset

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


# --------------------------------------------------------------------------------------------
# writers for the real formats


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


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("IOCANE_DATA_CACHE", str(cache))
    return cache


@pytest.fixture
def idx_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the files torchvision's own IDX reader opens (it still does the reading)."""
    paths: list[str] = []
    real = tv_mnist.read_image_file

    def spy(path: str):
        paths.append(path)
        return real(path)

    monkeypatch.setattr(tv_mnist, "read_image_file", spy)
    return paths


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST


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


def test_cache_is_reused_refreshed_and_keyed_by_root(tmp_path: Path, cache_dir: Path) -> None:
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    data_a, data_b = make_idx_data(seed=2), make_idx_data(seed=3)
    write_idx(root_a, data_a, compress=True)
    write_idx(root_b, data_b, compress=True)

    assert_matches_idx(load_raw_dataset("fashion_mnist", str(root_a)), data_a)
    (cache_a,) = cache_dir.iterdir()
    cached = cache_a / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    inode = cached.stat().st_ino

    # Second load: nothing is rewritten (os.replace would give a new inode).
    assert_matches_idx(load_raw_dataset("fashion_mnist", str(root_a)), data_a)
    assert cached.stat().st_ino == inode

    # A different root gets its own cache folder and its own data.
    assert_matches_idx(load_raw_dataset("fashion_mnist", str(root_b)), data_b)
    assert len(list(cache_dir.iterdir())) == 2

    # A damaged cached file (wrong size) is not trusted: it is decompressed again.
    cached.write_bytes(cached.read_bytes()[:100])
    assert_matches_idx(load_raw_dataset("fashion_mnist", str(root_a)), data_a)
    assert cached.stat().st_size == 16 + 7 * 28 * 28

    # New source files of the same size (e.g. swapped datasets) replace the cached copy.
    data_c = make_idx_data(seed=4)
    write_idx(root_a, data_c, compress=True)
    for name in IDX_NAMES:  # make the mtime change visible even on coarse-mtime filesystems
        os.utime(root_a / f"{name}.gz", ns=(0, 1_000_000_000))
    assert_matches_idx(load_raw_dataset("fashion_mnist", str(root_a)), data_c)


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


# --------------------------------------------------------------------------------------------
# CIFAR-10


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
    with pytest.raises(DataError, match=r"files missing in .*cifar-10-batches-py: test_batch"):
        load_raw_dataset("cifar10", str(tmp_path))


# --------------------------------------------------------------------------------------------
# SVHN


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


# --------------------------------------------------------------------------------------------
# errors


def test_truncated_gzip_names_the_file(tmp_path: Path, cache_dir: Path) -> None:
    write_idx(tmp_path, make_idx_data(seed=11), compress=True)
    broken = tmp_path / "train-images-idx3-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:200])

    with pytest.raises(DataError, match="truncated or corrupt") as info:
        load_raw_dataset("fashion_mnist", str(tmp_path))
    assert str(broken) in str(info.value)
    # The failed decompression left neither the target nor a temp file in the cache.
    (raw_dir,) = cache_dir.glob("*/FashionMNIST/raw")
    assert "train-images-idx3-ubyte" not in [p.name for p in raw_dir.iterdir()]
    assert not [p for p in raw_dir.iterdir() if p.name.endswith(".tmp")]


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


def test_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as info:
        load_raw_dataset("fashion_mnist", str(missing))
    assert str(missing) in str(info.value)


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


def test_unknown_dataset_lists_the_names() -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'") as info:
        load_raw_dataset("imagenet", None)
    for name in DATASET_NAMES:
        assert name in str(info.value)


def test_root_required_without_download() -> None:
    with pytest.raises(DataError, match=r"data\.root"):
        load_raw_dataset("mnist", None)


def test_labels_out_of_range(tmp_path: Path, cache_dir: Path) -> None:
    data = make_idx_data(seed=15)
    data["train-labels-idx1-ubyte"][3] = 12
    write_idx(tmp_path, data, compress=True)
    with pytest.raises(
        DataError, match=r"train labels .* range over \[\d+, 12\], outside \[0, 10\)"
    ):
        load_raw_dataset("fashion_mnist", str(tmp_path))


def test_empty_split(tmp_path: Path, cache_dir: Path) -> None:
    write_idx(tmp_path, make_idx_data(seed=16, n_test=0), compress=True)
    with pytest.raises(
        DataError, match="t10k-images-idx3-ubyte holds no items; the split is empty"
    ):
        load_raw_dataset("mnist", str(tmp_path))


def test_wrong_image_size(tmp_path: Path, cache_dir: Path) -> None:
    data = make_idx_data(seed=17)
    data["train-images-idx3-ubyte"] = np.zeros((7, 32, 32), dtype=np.uint8)
    write_idx(tmp_path, data, compress=True)
    with pytest.raises(DataError, match=r"shape \(7, 1, 32, 32\); expected \(N, 1, 28, 28\)"):
        load_raw_dataset("mnist", str(tmp_path))


# --------------------------------------------------------------------------------------------
# digits


def test_digits() -> None:
    raw = load_raw_dataset("digits", None)
    assert raw.train_images.shape == (1797, 1, 8, 8)
    assert raw.train_images.dtype == np.float32
    assert raw.train_images.min() == 0.0 and raw.train_images.max() == 1.0
    assert raw.train_labels.shape == (1797,) and raw.train_labels.dtype == np.int64
    assert set(np.unique(raw.train_labels)) == set(range(10))
    assert raw.test_images is None and raw.test_labels is None
    assert raw.num_classes == 10 and len(raw.class_names) == 10
