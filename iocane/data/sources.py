"""Raw image-classification datasets for iocane, as plain numpy arrays: the six names, the
check of where each is read from, and `load_raw_dataset`, which hands each name to its loader.

`load_raw_dataset` returns whole splits at once: the torchvision sets (MNIST, Fashion-MNIST in
`idx`; CIFAR-10, SVHN in `cifar_svhn`) are read through the real torchvision dataset classes,
but we take their `.data` / `.targets` arrays directly instead of iterating items, because
per-item PIL conversion would cost minutes on 60,000 images. Images come back uint8
(N, C, H, W); the small scikit-learn `digits` set (loaded here) comes back float32 in [0, 1]
and has no official test split. The user's own images (`folder`) are read by `folder`.

Every user-fixable problem (unknown name, missing or corrupt files, bad labels) is raised as
`DataError`, whose message names the dataset and the file or directory involved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iocane.base.errors import DataError
from iocane.data.cache import cache_base
from iocane.data.cifar_svhn import load_cifar10, load_svhn
from iocane.data.folder import FolderOptions, discover, load_image_folder
from iocane.data.idx import IDX_NAMES, load_mnist_like
from iocane.data.raw import DIGIT_NAMES, NUM_CLASSES, RawDataset, validate_split

DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "svhn", "folder")


def load_raw_dataset(
    name: str, root: str | None, download: bool = False, folder: FolderOptions | None = None
) -> RawDataset:
    """Load dataset `name` from directory `root` (ignored for digits).

    With `download=True` torchvision may fetch missing files into `root` (or into the iocane
    cache when `root` is None). `folder` says how the `folder` dataset's images are read.
    Raises DataError for anything wrong with the data.
    """
    root_path = check_data_source(name, root, download)
    if root_path is None:
        return _load_digits()
    if name == "folder":
        return load_image_folder(root_path, folder or FolderOptions())
    if name in ("mnist", "fashion_mnist"):
        return load_mnist_like(name, root_path, download)
    if name == "cifar10":
        return load_cifar10(root_path, download)
    return load_svhn(root_path, download)


def check_data_source(name: str, root: str | None, download: bool) -> Path | None:
    """The directory dataset ``name`` is read from (None for the bundled digits), or DataError
    when it cannot be: cheap, so ``iocane run`` checks it before starting any work."""
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASET_NAMES)}")
    if name == "digits":
        return None
    if name == "folder":
        if root is None:
            raise DataError("folder: no image folder given; set data.root to it")
        root_path = Path(root).expanduser().resolve()
        discover(root_path)  # the layout (classes, empty folders) is cheap to check up front
        return root_path
    if root is None:
        if not download:
            raise DataError(
                f"{name}: no data directory given; set data.root to the directory holding the "
                f"{name} files (or set data.download to let torchvision fetch them)"
            )
        return cache_base() / "downloads"
    root_path = Path(root).expanduser().resolve()  # symlinks and .. resolved: the real source
    if not download and not root_path.is_dir():
        raise DataError(
            f"{name}: data directory {root_path} (data.root) does not exist; "
            f"expected it to hold {_expected_files_hint(name)}"
        )
    return root_path


def _load_digits() -> RawDataset:
    # Imported here: scikit-learn is slow to import and only this dataset needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are counts 0..16 (4x4 blocks of a 32x32 bitmap), hence the division.
    images = (bunch.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    validate_split("digits", "train", images, labels, "scikit-learn load_digits()")
    return RawDataset(
        train_images=images,
        train_labels=labels,
        test_images=None,
        test_labels=None,
        num_classes=NUM_CLASSES,
        class_names=DIGIT_NAMES,
    )


def _expected_files_hint(name: str) -> str:
    hints: dict[str, str] = {
        "mnist": f"{', '.join(IDX_NAMES)} (optionally .gz, or under MNIST/raw/)",
        "fashion_mnist": f"{', '.join(IDX_NAMES)} (optionally .gz, or under FashionMNIST/raw/)",
        "cifar10": "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
        "svhn": "train_32x32.mat and test_32x32.mat",
    }
    return hints[name]
