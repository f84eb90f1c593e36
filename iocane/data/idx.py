"""MNIST and Fashion-MNIST: the four IDX files, read through torchvision's own dataset classes.

torchvision reads only uncompressed files from `<root>/<Class>/raw/`. Both datasets are also
accepted in the flat layout Debian's `dataset-fashion-mnist` package installs (the four
`*-ubyte.gz` files directly in one directory): `download=True` would not help there, because
Debian's gzip files have other md5 sums than torchvision's list, so it would go to the network.
Such files are decompressed once into iocane's cache (`iocane.data.cache`) and torchvision is
pointed there. Each IDX header is checked first, so that a bad file is named in the message.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from iocane.base.errors import DataError
from iocane.data.cache import fill_cache
from iocane.data.raw import READ_ERRORS, RawDataset, validate_split

# The IDX file names torchvision's MNIST and FashionMNIST read (without .gz), by split.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_NAMES: tuple[str, ...] = IDX_FILES["train"] + IDX_FILES["test"]


def load_mnist_like(name: str, root: Path, download: bool) -> RawDataset:
    """MNIST (`name` "mnist") or Fashion-MNIST from `root`, in any of the layouts above."""
    # torchvision is imported lazily so that importing this module (the CLI does, for
    # DataError) stays cheap.
    import torchvision

    dataset_cls = (
        torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    )
    class_dir = dataset_cls.__name__  # torchvision reads <root>/<class name>/raw/
    tv_root = _resolve_idx_root(name, root, class_dir, download)
    raw_dir = tv_root / class_dir / "raw"

    if download and not all((raw_dir / f).is_file() for f in IDX_NAMES):
        # Let torchvision fetch the files first, so the header checks below can name a file.
        try:
            dataset_cls(str(tv_root), train=True, download=True)
        except READ_ERRORS as exc:
            raise DataError(
                f"{name}: torchvision could not download into {raw_dir}: {exc}"
            ) from exc

    # torchvision's own reader fails with bare asserts or shape errors that do not say which
    # file is bad; checking the IDX headers first lets the message name it.
    for images_file, labels_file in IDX_FILES.values():
        check_idx_file(name, raw_dir / images_file, ndim=3)
        check_idx_file(name, raw_dir / labels_file, ndim=1)

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    class_names: tuple[str, ...] = ()
    for split in ("train", "test"):
        try:
            ds = dataset_cls(str(tv_root), train=split == "train", download=False)
        except READ_ERRORS as exc:
            raise DataError(
                f"{name}: torchvision could not read the {split} files "
                f"{', '.join(IDX_FILES[split])} in {raw_dir}: {exc}"
            ) from exc
        images = ds.data.numpy()[:, None]  # (N, H, W) -> (N, 1, H, W)
        labels = ds.targets.numpy().astype(np.int64, copy=False)
        validate_split(name, split, images, labels, str(raw_dir))
        arrays[split] = (images, labels)
        class_names = tuple(str(c) for c in ds.classes)

    return RawDataset.from_splits(arrays, class_names)


def _resolve_idx_root(name: str, root: Path, class_dir: str, download: bool) -> Path:
    """The directory to hand torchvision: `root` itself, or a cache dir we fill from `root`."""
    tv_raw = root / class_dir / "raw"
    if all((tv_raw / f).is_file() for f in IDX_NAMES):
        return root  # already the torchvision layout
    raw_itself = root.name == "raw" and root.parent.name == class_dir
    if raw_itself and all((root / f).is_file() for f in IDX_NAMES):
        return root.parent.parent  # data.root points at the raw folder itself
    # Flat layout (Debian's package: *.gz directly in root), or a torchvision raw folder that
    # holds only the .gz downloads; either way torchvision cannot read it as is.
    for source in (root, tv_raw):
        found = {f: _find_idx_source(source, f) for f in IDX_NAMES}
        files = {f: path for f, path in found.items() if path is not None}
        if len(files) == len(IDX_NAMES):
            return fill_cache(name, source, class_dir, files)
    if download:
        return root  # torchvision will download into root/<class_dir>/raw
    missing = [f"{f}[.gz]" for f in IDX_NAMES if _find_idx_source(root, f) is None]
    raise DataError(
        f"{name}: IDX files missing in {root} (data.root): {', '.join(missing)}; "
        "expected the four files "
        f"{', '.join(IDX_NAMES)} (optionally .gz) either directly in {root} or, uncompressed, "
        f"in {tv_raw} (torchvision's layout)"
    )


def _find_idx_source(directory: Path, filename: str) -> Path | None:
    # Prefer the uncompressed file when both exist: copying beats decompressing.
    for candidate in (directory / filename, directory / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def check_idx_file(name: str, path: Path, ndim: int) -> None:
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
