"""Raw image-classification datasets for iocane, as plain numpy arrays.

`load_raw_dataset` returns whole splits at once: the torchvision sets (MNIST, Fashion-MNIST,
CIFAR-10, SVHN) are read through the real torchvision dataset classes, but we take their
`.data` / `.targets` arrays directly instead of iterating items, because per-item PIL
conversion would cost minutes on 60,000 images. Images come back uint8 (N, C, H, W); the
small scikit-learn `digits` set comes back float32 in [0, 1] and has no official test split.

Fashion-MNIST and MNIST are also accepted in the flat layout that Debian's
`dataset-fashion-mnist` package installs (the four `*-ubyte.gz` files directly in one
directory). torchvision only reads uncompressed files from `<root>/<Class>/raw/`, and
`download=True` would not help because Debian's gzip files have different md5 sums from
torchvision's list, so it would go to the network. We therefore decompress such files once into
a per-root cache laid out the way torchvision expects and point torchvision there.

Every user-fixable problem (unknown name, missing or corrupt files, bad labels) is raised as
`DataError`, whose message names the dataset and the file or directory involved.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import pickle
import re
import shutil
import stat
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iocane.errors import DataError
from iocane.settings import settings

DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "svhn")

# Where flat-layout IDX files are decompressed; one subfolder per source directory.
CACHE_ENV_VAR = "IOCANE_DATA_CACHE"

# (C, H, W) each dataset must have: the model architectures are built for these sizes, so a
# file with other dimensions is an error here rather than a shape mismatch deep in training.
_IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "svhn": (3, 32, 32),
}
_NUM_CLASSES = 10  # all five datasets have ten classes
_DIGIT_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))

# The IDX file names torchvision's MNIST and FashionMNIST read (without .gz), by split.
_IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_NAMES: tuple[str, ...] = _IDX_FILES["train"] + _IDX_FILES["test"]

# Errors torchvision's readers raise on bad files. Its IDX reader checks the magic number with a
# bare `assert` and reports wrong dtypes/dimensions as TypeError/ValueError; truncated data shows
# up as RuntimeError from `tensor.view`; CIFAR's pickles raise UnpicklingError/EOFError/KeyError.
# Listed explicitly so that genuine bugs (AttributeError, NameError, ...) still surface as such.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AssertionError,
    zlib.error,
    pickle.UnpicklingError,
)


@dataclass(frozen=True)
class RawDataset:
    """Whole splits of one dataset, before any train/validation split or normalisation."""

    train_images: np.ndarray  # uint8 (N,C,H,W) for torchvision sets; float32 in [0,1] for digits
    train_labels: np.ndarray  # int64 (N,)
    test_images: np.ndarray | None  # None for digits (no official split)
    test_labels: np.ndarray | None
    num_classes: int
    class_names: tuple[str, ...]


def load_raw_dataset(name: str, root: str | None, download: bool = False) -> RawDataset:
    """Load dataset `name` from directory `root` (ignored for digits).

    With `download=True` torchvision may fetch missing files into `root` (or into the iocane
    cache when `root` is None). Raises DataError for anything wrong with the data.
    """
    root_path = check_data_source(name, root, download)
    if root_path is None:
        return _load_digits()
    if name in ("mnist", "fashion_mnist"):
        return _load_mnist_like(name, root_path, download)
    if name == "cifar10":
        return _load_cifar10(root_path, download)
    return _load_svhn(root_path, download)


def check_data_source(name: str, root: str | None, download: bool) -> Path | None:
    """The directory dataset ``name`` is read from (None for the bundled digits), or DataError
    when it cannot be: cheap, so ``iocane run`` checks it before starting any work."""
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASET_NAMES)}")
    if name == "digits":
        return None
    if root is None:
        if not download:
            raise DataError(
                f"{name}: no data directory given; set data.root to the directory holding the "
                f"{name} files (or set data.download to let torchvision fetch them)"
            )
        return _cache_base() / "downloads"
    root_path = Path(root).expanduser().resolve()  # symlinks and .. resolved: the real source
    if not download and not root_path.is_dir():
        raise DataError(
            f"{name}: data directory {root_path} (data.root) does not exist; "
            f"expected it to hold {_expected_files_hint(name)}"
        )
    return root_path


# --------------------------------------------------------------------------------------------
# digits


def _load_digits() -> RawDataset:
    # Imported here: scikit-learn is slow to import and only this dataset needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are counts 0..16 (4x4 blocks of a 32x32 bitmap), hence the division.
    images = (bunch.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    _validate_split("digits", "train", images, labels, "scikit-learn load_digits()")
    return RawDataset(
        train_images=images,
        train_labels=labels,
        test_images=None,
        test_labels=None,
        num_classes=_NUM_CLASSES,
        class_names=_DIGIT_NAMES,
    )


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST


def _load_mnist_like(name: str, root: Path, download: bool) -> RawDataset:
    # torchvision is imported lazily so that importing this module (the CLI does, for
    # DataError) stays cheap.
    import torchvision

    dataset_cls = (
        torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    )
    class_dir = dataset_cls.__name__  # torchvision reads <root>/<class name>/raw/
    tv_root = _resolve_idx_root(name, root, class_dir, download)
    raw_dir = tv_root / class_dir / "raw"

    if download and not all((raw_dir / f).is_file() for f in _IDX_NAMES):
        # Let torchvision fetch the files first, so the header checks below can name a file.
        try:
            dataset_cls(str(tv_root), train=True, download=True)
        except _READ_ERRORS as exc:
            raise DataError(
                f"{name}: torchvision could not download into {raw_dir}: {exc}"
            ) from exc

    # torchvision's own reader fails with bare asserts or shape errors that do not say which
    # file is bad; checking the IDX headers first lets the message name it.
    for images_file, labels_file in _IDX_FILES.values():
        _check_idx_file(name, raw_dir / images_file, ndim=3)
        _check_idx_file(name, raw_dir / labels_file, ndim=1)

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    class_names: tuple[str, ...] = ()
    for split in ("train", "test"):
        try:
            ds = dataset_cls(str(tv_root), train=split == "train", download=False)
        except _READ_ERRORS as exc:
            raise DataError(
                f"{name}: torchvision could not read the {split} files "
                f"{', '.join(_IDX_FILES[split])} in {raw_dir}: {exc}"
            ) from exc
        images = ds.data.numpy()[:, None]  # (N, H, W) -> (N, 1, H, W)
        labels = ds.targets.numpy().astype(np.int64, copy=False)
        _validate_split(name, split, images, labels, str(raw_dir))
        arrays[split] = (images, labels)
        class_names = tuple(str(c) for c in ds.classes)

    return RawDataset(
        train_images=arrays["train"][0],
        train_labels=arrays["train"][1],
        test_images=arrays["test"][0],
        test_labels=arrays["test"][1],
        num_classes=_NUM_CLASSES,
        class_names=class_names,
    )


def _resolve_idx_root(name: str, root: Path, class_dir: str, download: bool) -> Path:
    """The directory to hand torchvision: `root` itself, or a cache dir we fill from `root`."""
    tv_raw = root / class_dir / "raw"
    if all((tv_raw / f).is_file() for f in _IDX_NAMES):
        return root  # already the torchvision layout
    raw_itself = root.name == "raw" and root.parent.name == class_dir
    if raw_itself and all((root / f).is_file() for f in _IDX_NAMES):
        return root.parent.parent  # data.root points at the raw folder itself
    # Flat layout (Debian's package: *.gz directly in root), or a torchvision raw folder that
    # holds only the .gz downloads; either way torchvision cannot read it as is.
    for source in (root, tv_raw):
        if all(_find_idx_source(source, f) is not None for f in _IDX_NAMES):
            return _fill_cache(name, source, class_dir)
    if download:
        return root  # torchvision will download into root/<class_dir>/raw
    missing = [f"{f}[.gz]" for f in _IDX_NAMES if _find_idx_source(root, f) is None]
    raise DataError(
        f"{name}: IDX files missing in {root}: {', '.join(missing)}; expected the four files "
        f"{', '.join(_IDX_NAMES)} (optionally .gz) either directly in {root} or, uncompressed, "
        f"in {tv_raw} (torchvision's layout)"
    )


def _find_idx_source(directory: Path, filename: str) -> Path | None:
    # Prefer the uncompressed file when both exist: copying beats decompressing.
    for candidate in (directory / filename, directory / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _cache_base() -> Path:
    return settings().data_cache.expanduser()


def _cache_key(source: Path) -> str:
    """A folder name unique to `source`, so different data roots never share cached files."""
    resolved = str(source.resolve())
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:12]
    # A readable prefix (e.g. "fashion-mnist-3f2a...") helps anyone inspecting the cache.
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", source.name)[:40] or "root"
    return f"{label}-{digest}"


def _fill_cache(name: str, source: Path, class_dir: str) -> Path:
    """Copy or decompress the four IDX files from `source` into a torchvision-layout cache."""
    cache_root = _cache_base() / _cache_key(source)
    raw_dir = cache_root / class_dir / "raw"
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{name}: cannot create the cache directory {raw_dir} ({exc}); "
            f"set {CACHE_ENV_VAR} to a writable directory"
        ) from exc
    for filename in _IDX_NAMES:
        src = _find_idx_source(source, filename)
        assert src is not None  # checked by the caller
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


def _check_idx_file(name: str, path: Path, ndim: int) -> None:
    """Check an uncompressed IDX file's magic number and that its size matches its header."""
    expected_magic = 0x00000800 | ndim  # 0x08 = unsigned byte data, then the dimension count
    kind = "image" if ndim == 3 else "label"
    header_size = 4 * (1 + ndim)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(header_size)
    except FileNotFoundError:
        raise DataError(f"{name}: IDX {kind} file {path} is missing") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read IDX {kind} file {path}: {exc}") from exc
    if len(header) < header_size:
        raise DataError(f"{name}: IDX {kind} file {path} is truncated ({size} bytes)")
    magic, *dims = struct.unpack(f">{1 + ndim}I", header)
    if magic != expected_magic:
        raise DataError(
            f"{name}: {path} is not an IDX {kind} file "
            f"(magic 0x{magic:08x}, expected 0x{expected_magic:08x})"
        )
    if dims[0] == 0:
        # torchvision cannot even build a tensor from an empty IDX body (torch.frombuffer
        # rejects zero-length buffers), so say what is wrong here.
        raise DataError(f"{name}: IDX {kind} file {path} holds no items; the split is empty")
    expected_size = header_size + int(np.prod(dims, dtype=np.int64))
    if size != expected_size:
        raise DataError(
            f"{name}: IDX {kind} file {path} has {size} bytes but its header (dims {dims}) "
            f"implies {expected_size}; the file is truncated or corrupt"
        )


# --------------------------------------------------------------------------------------------
# CIFAR-10


def _load_cifar10(root: Path, download: bool) -> RawDataset:
    import torchvision
    from torchvision.datasets.utils import check_integrity

    dataset_cls = torchvision.datasets.CIFAR10
    base = root / dataset_cls.base_folder
    # Read the file list (and md5 sums) from torchvision so we check exactly what it loads.
    checksums = [(f, md5) for f, md5 in dataset_cls.train_list + dataset_cls.test_list]
    checksums.append((dataset_cls.meta["filename"], dataset_cls.meta["md5"]))
    if not download:
        _require_files("cifar10", base, [f for f, _ in checksums])

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    class_names: tuple[str, ...] = ()
    for split in ("train", "test"):
        try:
            ds = dataset_cls(str(root), train=split == "train", download=download)
        except _READ_ERRORS as exc:
            # torchvision verifies md5 sums before unpickling, so its "not found or corrupted"
            # RuntimeError usually means a checksum mismatch; find the file to name it.
            bad = [f for f, md5 in checksums if not check_integrity(str(base / f), md5)]
            where = f"bad or missing: {', '.join(str(base / f) for f in bad)}" if bad else base
            raise DataError(
                f"cifar10: torchvision could not load the {split} split ({where}): {exc}"
            ) from exc
        # torchvision stores CIFAR as (N, H, W, C) for PIL; we want channels first.
        images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
        labels = np.asarray(ds.targets, dtype=np.int64)
        _validate_split("cifar10", split, images, labels, str(base))
        arrays[split] = (images, labels)
        class_names = tuple(str(c) for c in ds.classes)

    if len(class_names) != _NUM_CLASSES:
        meta = base / dataset_cls.meta["filename"]
        raise DataError(f"cifar10: {meta} lists {len(class_names)} class names, expected 10")
    return RawDataset(
        train_images=arrays["train"][0],
        train_labels=arrays["train"][1],
        test_images=arrays["test"][0],
        test_labels=arrays["test"][1],
        num_classes=_NUM_CLASSES,
        class_names=class_names,
    )


# --------------------------------------------------------------------------------------------
# SVHN


def _load_svhn(root: Path, download: bool) -> RawDataset:
    import torchvision

    dataset_cls = torchvision.datasets.SVHN
    files = {split: dataset_cls.split_list[split][1] for split in ("train", "test")}
    if not download:
        _require_files("svhn", root, list(files.values()))
    try:
        # torchvision imports scipy lazily inside SVHN; fail early with a clear message.
        from scipy.io.matlab import MatReadError
    except ImportError as exc:
        raise DataError("svhn: reading SVHN's .mat files needs scipy (pip install scipy)") from exc

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, filename in files.items():
        path = root / filename
        try:
            ds = dataset_cls(str(root), split=split, download=download)
        except RuntimeError as exc:
            # Raised by torchvision's md5 check, before the file is parsed.
            raise DataError(f"svhn: {path} is missing or fails its checksum: {exc}") from exc
        except (*_READ_ERRORS, MatReadError) as exc:
            raise DataError(f"svhn: cannot read {path}: {exc}") from exc
        # torchvision already transposed X from (H, W, C, N) to (N, C, H, W) and mapped the
        # label 10 (used for digit 0) to 0. reshape(-1) undoes squeeze() turning N=1 into 0-d.
        images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8))
        labels = np.asarray(ds.labels, dtype=np.int64).reshape(-1)
        _validate_split("svhn", split, images, labels, str(path))
        arrays[split] = (images, labels)

    return RawDataset(
        train_images=arrays["train"][0],
        train_labels=arrays["train"][1],
        test_images=arrays["test"][0],
        test_labels=arrays["test"][1],
        num_classes=_NUM_CLASSES,
        class_names=_DIGIT_NAMES,
    )


# --------------------------------------------------------------------------------------------
# shared checks


def _require_files(name: str, directory: Path, filenames: list[str]) -> None:
    missing = [f for f in filenames if not (directory / f).is_file()]
    if missing:
        raise DataError(
            f"{name}: files missing in {directory}: {', '.join(missing)} "
            f"(expected {', '.join(filenames)})"
        )


def _validate_split(
    name: str, split: str, images: np.ndarray, labels: np.ndarray, source: str
) -> None:
    """Reject empty splits, unexpected image shapes and labels outside [0, num_classes)."""
    c, h, w = _IMAGE_SHAPES[name]
    if images.ndim != 4 or tuple(images.shape[1:]) != (c, h, w):
        raise DataError(
            f"{name}: {split} images from {source} have shape {tuple(images.shape)}; "
            f"expected (N, {c}, {h}, {w})"
        )
    if labels.shape != (images.shape[0],):
        raise DataError(
            f"{name}: {split} split from {source} has {images.shape[0]} images "
            f"but labels of shape {tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise DataError(f"{name}: the {split} split from {source} is empty")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= _NUM_CLASSES:
        raise DataError(
            f"{name}: {split} labels from {source} range over [{low}, {high}], "
            f"outside [0, {_NUM_CLASSES})"
        )


def _expected_files_hint(name: str) -> str:
    hints: dict[str, str] = {
        "mnist": f"{', '.join(_IDX_NAMES)} (optionally .gz, or under MNIST/raw/)",
        "fashion_mnist": f"{', '.join(_IDX_NAMES)} (optionally .gz, or under FashionMNIST/raw/)",
        "cifar10": "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
        "svhn": "train_32x32.mat and test_32x32.mat",
    }
    return hints[name]
