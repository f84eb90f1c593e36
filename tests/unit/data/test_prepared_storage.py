"""data/prepared on disk: one .npy per array in the dataset's dtype, written atomically,
memory-mapped back, fingerprinted by streaming the files (the same values as fingerprinting the
arrays in memory), a changed file refused by name; and a split's float images, a batch at a
time, exactly the values the float32 conversion at load time used to give."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from iocane.base.config import Config, load_config
from iocane.base.errors import DataError
from iocane.base.layout import PREPARED_ARRAYS, Layout
from iocane.data import prepared, storage
from iocane.data.prepared import Split, load_prepared, prepare_data, split_dataset, unit_float
from iocane.data.raw import RawDataset
from iocane.data.sources import load_raw_dataset
from iocane.data.storage import file_fingerprints, fingerprint_arrays
from tests.helpers.paths import PROJECT_ROOT

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def _config(*overrides: str) -> Config:
    return load_config(PROJECT_ROOT / "params.yaml", list(overrides))


def _old_float(images: np.ndarray) -> torch.Tensor:
    """How load_prepared converted the images before they were stored as uint8."""
    if images.dtype == np.uint8:
        return torch.from_numpy(images.astype(np.float32) / 255.0)
    return torch.from_numpy(images.astype(np.float32, copy=False))


@pytest.fixture
def colour_raw(monkeypatch: pytest.MonkeyPatch) -> RawDataset:
    """A uint8 RGB dataset (2000 images of 3x16x16, ten classes) in place of a real loader."""
    generator = np.random.default_rng(7)
    raw = RawDataset(
        train_images=generator.integers(0, 256, size=(2000, 3, 16, 16), dtype=np.uint8),
        train_labels=np.repeat(np.arange(10, dtype=np.int64), 200),
        test_images=None,
        test_labels=None,
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
    )
    monkeypatch.setattr(prepared, "load_raw_dataset", lambda *args, **kwargs: raw)
    return raw


def test_fingerprint_definition_is_unchanged() -> None:
    """The value the single-archive implementation gave for these arrays: registry tags and
    cached data keyed on fingerprints stay valid."""
    arrays = {
        "train_images": np.arange(24, dtype=np.uint8).reshape(2, 1, 3, 4),
        "train_labels": np.array([0, 1], dtype=np.int64),
        "val_images": np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 1, 3, 4),
    }
    expected = "1d162e6c76611c1729c65702921084e0112a453c4112ba91b35df5853819b401"
    assert fingerprint_arrays(arrays) == expected


def test_uint8_round_trip_memory_mapped(tmp_path: Path, colour_raw: RawDataset) -> None:
    layout = Layout(tmp_path)
    (layout.prepared_dir).mkdir(parents=True)
    (layout.prepared_dir / "arrays.npz").write_bytes(b"from an older prepare")
    config = _config("data.dataset=cifar10", "data.root=/nowhere")
    ref = prepare_data(config, layout)
    files = sorted(path.name for path in layout.prepared_dir.iterdir())
    assert files == sorted(["meta.json", *(f"{name}.npy" for name in PREPARED_ARRAYS)])
    arrays = split_dataset(colour_raw, config.data, config.seed)
    assert ref.fingerprint == fingerprint_arrays(arrays)  # streamed from files == in memory
    meta = json.loads(layout.prepared_meta.read_text())
    assert meta["fingerprint"] == ref.fingerprint and set(meta["files"]) == {
        f"{name}.npy" for name in PREPARED_ARRAYS
    }
    for name, path in layout.prepared_arrays.items():
        stored = np.load(path, allow_pickle=False)
        assert stored.dtype == arrays[name].dtype and np.array_equal(stored, arrays[name])
    data = load_prepared(layout)
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        assert split.pixels.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert torch.equal(split.images, _old_float(arrays[f"{name}_images"]))
        assert torch.equal(split.labels, torch.from_numpy(arrays[f"{name}_labels"]))
    assert data.meta["in_channels"] == 3 and data.meta["image_size"] == 16


def test_load_does_not_materialise_the_images(
    tmp_path: Path, colour_raw: RawDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The arrays are mapped, not read: loading allocates a small part of even their uint8
    size (the hash reads the files a chunk at a time), nothing like their float32 size."""
    layout = Layout(tmp_path)
    prepare_data(_config("data.dataset=cifar10", "data.root=/nowhere"), layout)
    monkeypatch.setattr(storage, "CHUNK_BYTES", 1 << 16)
    tracemalloc.start()
    try:
        data = load_prepared(layout)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stored = data.train.pixels.numel()  # bytes of the uint8 training images
    assert peak < stored / 4, (peak, stored)
    batch = data.train.batch(torch.tensor([5, 0, 17]))
    assert batch.dtype == torch.float32 and batch.shape == (3, 3, 16, 16)


def test_digits_stay_float32(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    config = _config()
    prepare_data(config, layout)
    raw = load_raw_dataset("digits", None)
    arrays = split_dataset(raw, config.data, config.seed)
    data = load_prepared(layout)
    assert data.train.pixels.dtype == torch.float32
    assert torch.equal(data.train.images, torch.from_numpy(arrays["train_images"]))
    assert data.train.images.data_ptr() == data.train.pixels.data_ptr()  # no conversion copy


@pytest.mark.parametrize("damage", ["truncate", "modify"])
def test_a_changed_array_file_is_refused_by_name(
    tmp_path: Path, colour_raw: RawDataset, damage: str
) -> None:
    layout = Layout(tmp_path)
    prepare_data(_config("data.dataset=cifar10", "data.root=/nowhere"), layout)
    path = layout.prepared_arrays["val_images"]
    content = bytearray(path.read_bytes())
    if damage == "truncate":
        del content[-100:]
    else:
        content[-1] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(DataError, match="does not match the fingerprint") as info:
        load_prepared(layout)
    assert str(path) in str(info.value)
    assert str(layout.prepared_arrays["train_images"]) not in str(info.value)


def test_a_missing_or_foreign_array_file_is_named(tmp_path: Path, colour_raw: RawDataset) -> None:
    layout = Layout(tmp_path)
    prepare_data(_config("data.dataset=cifar10", "data.root=/nowhere"), layout)
    labels = layout.prepared_arrays["test_labels"]
    labels.write_bytes(b"not an array")
    with pytest.raises(DataError, match="unreadable") as info:
        load_prepared(layout)
    assert str(labels) in str(info.value)
    labels.unlink()
    with pytest.raises(DataError, match="missing: run the prepare stage") as info:
        file_fingerprints(layout.prepared_arrays)
    assert str(labels) in str(info.value)


def test_a_prepare_stopped_half_way_is_never_valid(
    tmp_path: Path, colour_raw: RawDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New arrays written but meta.json not yet: the old meta.json is gone, so nothing loads."""
    layout = Layout(tmp_path)
    config = _config("data.dataset=cifar10", "data.root=/nowhere")
    prepare_data(config, layout)

    def stop(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prepared, "write_json", stop)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(_config("data.dataset=cifar10", "data.root=/nowhere", "seed=1"), layout)
    assert not layout.prepared_meta.exists()
    with pytest.raises(FileNotFoundError, match=r"meta\.json is missing"):
        load_prepared(layout)
    assert not list(layout.prepared_dir.glob(".*.tmp"))  # no temp file left behind


def test_chunked_statistics_agree_with_the_in_memory_ones(
    colour_raw: RawDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = colour_raw.train_images
    exact = prepared.channel_statistics(images)
    monkeypatch.setattr(prepared, "STATISTICS_IN_ONE_PASS_BYTES", 0)
    monkeypatch.setattr(prepared, "STATISTICS_CHUNK_IMAGES", 300)
    chunked = prepared.channel_statistics(images)
    np.testing.assert_allclose(chunked, exact, rtol=1e-5)
    floats = images.astype(np.float64) / 255
    np.testing.assert_allclose(chunked[0], floats.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(chunked[1], floats.std(axis=(0, 2, 3)), rtol=1e-6)


def test_every_uint8_value_converts_as_before() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    old = _old_float(pixels.numpy())
    assert torch.equal(unit_float(pixels), old)
    split = Split(pixels.repeat(3, 1, 1, 1), torch.zeros(3, dtype=torch.int64))
    assert torch.equal(split.batch(slice(1, 3)), old.repeat(2, 1, 1, 1))
    assert torch.equal(split.subset(torch.tensor([2])).images, old)
    if torch.cuda.is_available():
        on_gpu = split.to(torch.device("cuda"))
        assert on_gpu.pixels.dtype == torch.uint8
        assert torch.equal(on_gpu.batch(torch.tensor([0], device="cuda")).cpu(), old)


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_fashion_mnist_batches_equal_the_old_float_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IOCANE_DATA_CACHE", str(tmp_path / "cache"))
    config = _config("data.dataset=fashion_mnist", f"data.root={FASHION}", "data.limit_train=600")
    layout = Layout(tmp_path)
    ref = prepare_data(config, layout)
    arrays = split_dataset(load_raw_dataset("fashion_mnist", str(FASHION)), config.data, 0)
    assert ref.fingerprint == fingerprint_arrays(arrays)
    data = load_prepared(layout)
    old = _old_float(arrays["train_images"])
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    for batch in order.split(64):
        assert torch.equal(data.train.batch(batch), old[batch])
    assert data.train.pixels.dtype == torch.uint8
