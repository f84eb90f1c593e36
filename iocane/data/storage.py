"""The prepared arrays on disk: one ``.npy`` file per array, written atomically, fingerprinted by
streaming the files, and memory-mapped back.

Images stay in the dtype the dataset has (uint8 for every image dataset, float32 for digits), so
a prepared folder of images takes a quarter of what float32 would, and ``load_prepared`` maps
the files instead of reading them: a process holds only the pages it touches.

The fingerprint is ``fingerprint_arrays``'s value (sha256 over each array's name, dtype, shape
and bytes, names sorted), whether computed from arrays in memory or streamed from the files, so
fingerprints and registry tags of data prepared before the arrays had their own files stay valid.
Each file's own sha256 is kept beside it in ``meta.json`` so that a changed file is named.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from iocane.base.errors import DataError
from iocane.base.files import write_atomic

CHUNK_BYTES = 16 << 20  # read this much at a time when hashing a file


def fingerprint_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.reshape(-1).view(np.uint8).data)  # the bytes, without a copy
    return digest.hexdigest()


def write_arrays(paths: Mapping[str, Path], arrays: Mapping[str, np.ndarray]) -> None:
    """Each array to its own ``.npy`` (C order, no pickles), each file written atomically."""
    for name, path in paths.items():
        array = np.ascontiguousarray(arrays[name])

        def save(stream: BinaryIO, array: np.ndarray = array) -> None:
            np.save(stream, array, allow_pickle=False)

        write_atomic(path, save)


def _header(path: Path, stream: BinaryIO) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape of the ``.npy`` open in ``stream``, left at the first data byte."""
    try:
        version = np.lib.format.read_magic(stream)
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        if version not in readers:
            raise ValueError(f".npy format version {version}")
        shape, fortran_order, dtype = readers[version](stream)
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is unreadable: {error}") from None
    if fortran_order or dtype.hasobject:
        raise DataError(f"{path} is unreadable: not an array the prepare stage writes")
    return dtype, shape


def file_fingerprints(paths: Mapping[str, Path]) -> tuple[str, dict[str, str]]:
    """``fingerprint_arrays`` of the arrays in the files, and each file's sha256, streamed from
    the files in chunks (nothing is loaded whole). A short file hashes differently, so it fails
    the check like any other change."""
    combined = hashlib.sha256()
    files: dict[str, str] = {}
    for name in sorted(paths):
        path = paths[name]
        try:
            stream = path.open("rb")
        except FileNotFoundError:
            raise DataError(f"{path} is missing: run the prepare stage") from None
        with stream:
            dtype, shape = _header(path, stream)
            header_end = stream.tell()
            stream.seek(0)
            whole = hashlib.sha256(stream.read(header_end))
            combined.update(f"{name}:{dtype.str}:{shape};".encode())
            for block in iter(functools.partial(stream.read, CHUNK_BYTES), b""):
                combined.update(block)
                whole.update(block)
        files[path.name] = whole.hexdigest()
    return combined.hexdigest(), files


def map_arrays(paths: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """The arrays, memory-mapped copy-on-write: nothing is read until used, nothing is ever
    written back (``"c"`` rather than ``"r"`` so that torch can wrap them without a warning)."""
    arrays = {}
    for name, path in paths.items():
        try:
            arrays[name] = np.load(path, mmap_mode="c", allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{path} is missing: run the prepare stage") from None
        except (OSError, ValueError) as error:
            raise DataError(f"{path} is unreadable: {error}") from None
    return arrays
