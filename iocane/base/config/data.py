"""The ``data`` section: which dataset, where its files are, and how it is split."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from iocane.base.config.fields import Section, Text, require


class DataConfig(Section):
    dataset: Literal["digits", "mnist", "fashion_mnist", "cifar10", "svhn", "folder"]
    root: Text | None = Field(
        description="directory holding the torchvision files, or the image folder (folder); "
        "unused for digits"
    )
    download: bool = Field(description="let torchvision download into root (needs network)")
    val_fraction: float = Field(
        gt=0, lt=0.5, description="of the training split, for per-epoch validation"
    )
    test_fraction: float = Field(
        gt=0, lt=0.5, description="held-out test share when the dataset has no official split"
    )
    limit_train: int = Field(
        ge=0, description="0 = all training images; N = a stratified subsample"
    )
    limit_test: int = Field(ge=0, description="0 = all test images")
    image_size: int = Field(
        ge=0,
        le=4096,
        description="folder: side after resizing the shorter side and centre-cropping; "
        "0 = keep (all images must share one square size)",
    )
    channels: Literal[0, 1, 3] = Field(
        description="folder: 1 (grayscale), 3 (RGB), 0 = infer (1 when every image is grayscale)"
    )
    on_bad_image: Literal["fail", "skip"] = Field(
        description="folder: an unreadable or truncated image fails prepare, or is skipped"
    )
    # Optional: params files written before it resize, as torchvision's Resize does.
    on_small_image: Literal["resize", "fail"] = Field(
        "resize",
        description="folder: an image smaller than image_size is scaled up (counted and "
        "logged, as torchvision's Resize does) or fails prepare",
    )

    @model_validator(mode="after")
    def _files_to_read(self) -> Self:
        if self.dataset == "folder":
            require(self.root is not None, "root", "dataset folder needs data.root: the folder")
            require(not self.download, "download", "dataset folder has nothing to download")
            return self
        require(
            self.dataset == "digits" or self.root is not None or self.download,
            "root",
            f"dataset {self.dataset} needs a root directory (or data.download: true)",
        )
        for key, value, default in (
            ("image_size", self.image_size, 0),
            ("channels", self.channels, 0),
            ("on_bad_image", self.on_bad_image, "fail"),
            ("on_small_image", self.on_small_image, "resize"),
        ):
            require(value == default, key, f"applies to dataset folder only (keep {default})")
        return self
