"""iocane.data.cache: flat-layout IDX files decompressed once per source directory, reused,
refreshed when the source changes, and never left half-written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from iocane.base.errors import DataError
from iocane.data.sources import load_raw_dataset
from tests.helpers.dataset_files import (
    IDX_NAMES,
    assert_matches_idx,
    make_idx_data,
    write_idx,
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


def test_an_unwritable_cache_names_the_variable_that_moves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx(tmp_path / "flat", make_idx_data(seed=18), compress=True)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache should be")
    monkeypatch.setenv("IOCANE_DATA_CACHE", str(blocker))
    with pytest.raises(DataError, match="cannot create the cache directory") as info:
        load_raw_dataset("fashion_mnist", str(tmp_path / "flat"))
    assert "set IOCANE_DATA_CACHE to a writable directory" in str(info.value)


def test_the_cached_copy_keeps_the_source_permissions(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "flat"
    write_idx(root, make_idx_data(seed=19), compress=True)
    for source in root.iterdir():
        source.chmod(0o640)
    load_raw_dataset("mnist", str(root))
    (cached,) = cache_dir.glob("*/MNIST/raw")
    assert {stat.S_IMODE(path.stat().st_mode) for path in cached.iterdir()} == {0o640}
