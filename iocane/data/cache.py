"""iocane's cache of dataset files: where downloads go when ``data.root`` is unset, and where
flat-layout IDX files (Debian's ``dataset-fashion-mnist``: ``*-ubyte.gz`` in one directory) are
decompressed once into the layout torchvision reads (``<Class>/raw/``), one folder per source
directory. ``IOCANE_DATA_CACHE`` moves it from ``~/.cache/iocane/datasets``.

Files are written atomically and refreshed when their source changes (size and mtime), so a
crash or a swapped source never leaves a cached file that a later run would wrongly trust.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import shutil
import stat
import struct
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path

from iocane.base.errors import DataError
from iocane.base.settings import settings

# Where flat-layout IDX files are decompressed; one subfolder per source directory.
CACHE_ENV_VAR = "IOCANE_DATA_CACHE"


def cache_base() -> Path:
    """The cache directory: ``$IOCANE_DATA_CACHE``, else ``~/.cache/iocane/datasets``."""
    return settings().data_cache.expanduser()


def _cache_key(source: Path) -> str:
    """A folder name unique to `source`, so different data roots never share cached files."""
    resolved = str(source.resolve())
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:12]
    # A readable prefix (e.g. "fashion-mnist-3f2a...") helps anyone inspecting the cache.
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", source.name)[:40] or "root"
    return f"{label}-{digest}"


def fill_cache(name: str, source: Path, class_dir: str, files: Mapping[str, Path]) -> Path:
    """Copy or decompress `files` (cached file name -> file under `source`, .gz or not) into
    the cache folder of `source`, laid out as torchvision expects; returns that folder."""
    cache_root = cache_base() / _cache_key(source)
    raw_dir = cache_root / class_dir / "raw"
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{name}: cannot create the cache directory {raw_dir} ({exc}); "
            f"set {CACHE_ENV_VAR} to a writable directory"
        ) from exc
    for filename, src in files.items():
        _materialize(name, src, raw_dir / filename)
    return cache_root


def _materialize(name: str, src: Path, dst: Path) -> None:
    """Write `src` (decompressed if .gz) to `dst` atomically, unless `dst` is already current.

    The temporary file lives next to `dst` so os.replace is an atomic rename: a crash leaves at
    worst a stray hidden temp file, never a half-written `dst` that a later run would trust.
    """
    compressed = src.suffix == ".gz"
    try:
        src_stat = src.stat()
    except OSError as exc:
        raise DataError(f"{name}: cannot read {src}: {exc}") from exc
    expected_size = _gzip_uncompressed_size(src) if compressed else src_stat.st_size

    # Up to date when both the size and the copied source mtime match. Size alone is not
    # enough: MNIST and Fashion-MNIST files have identical sizes, so a root whose files were
    # swapped for the other dataset would otherwise keep serving stale data.
    try:
        dst_stat = dst.stat()
    except FileNotFoundError:
        dst_stat = None
    if (
        dst_stat is not None
        and expected_size >= 0
        and dst_stat.st_size % 2**32 == expected_size % 2**32
        and dst_stat.st_mtime_ns == src_stat.st_mtime_ns
    ):
        return

    verb = "decompress" if compressed else "copy"
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            with gzip.open(src, "rb") if compressed else open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp creates the file 0600; give the cache copy the source's permissions instead.
        os.chmod(tmp_name, stat.S_IMODE(src_stat.st_mode))
        os.utime(tmp_name, ns=(src_stat.st_atime_ns, src_stat.st_mtime_ns))
        os.replace(tmp_name, dst)
    except (OSError, EOFError, zlib.error) as exc:
        # gzip raises EOFError for a truncated file and BadGzipFile (an OSError) or zlib.error
        # for corrupt data or a CRC/length mismatch.
        _remove_quietly(tmp_name)
        raise DataError(
            f"{name}: cannot {verb} {src} into {dst} (truncated or corrupt file?): {exc}"
        ) from exc
    except BaseException:
        _remove_quietly(tmp_name)
        raise


def _gzip_uncompressed_size(path: Path) -> int:
    """ISIZE from the gzip trailer: the uncompressed size modulo 2**32 (-1 if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 18:  # smaller than any valid gzip member
                return -1
            f.seek(-4, os.SEEK_END)
            return struct.unpack("<I", f.read(4))[0]
    except OSError:
        return -1


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
