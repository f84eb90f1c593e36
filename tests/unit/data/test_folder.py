"""The ``folder`` dataset on real image files written with Pillow: the arrays match the images
after the documented conversion, resize and centre crop; splits and class names follow the
folders; every bad folder is a DataError naming its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iocane.base.config import Config, ConfigError, load_config
from iocane.base.errors import DataError
from iocane.base.layout import Layout
from iocane.data.folder import FolderOptions, load_image_folder
from iocane.data.prepared import load_prepared, prepare_data
from iocane.data.sources import check_data_source
from models import build_model
from tests.helpers.image_folder import pattern, truncate, write_folder, write_image
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.pipeline_params import write_tiny_params


def _config(tmp_path: Path, root: Path, *overrides: str) -> Config:
    params = write_tiny_params(tmp_path / "params.yaml")
    return load_config(
        params, ["data.dataset=folder", f"data.root={root}", "data.limit_train=0", *overrides]
    )


def test_png_pixels_classes_and_labels(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets", classes=("dog", "cat", "bird"), per_class=3)
    raw = load_image_folder(root, FolderOptions())
    assert raw.class_names == ("bird", "cat", "dog")  # sorted folder names
    assert raw.num_classes == 3 and raw.test_images is None and raw.skipped_images == 0
    assert raw.train_images.dtype == np.uint8 and raw.train_images.shape == (9, 3, 16, 16)
    # Files are read class by class, each class in name order: bird 0..2, cat 0..2, dog 0..2.
    written_label = {"bird": 2, "cat": 1, "dog": 0}  # the pattern's label argument in write_folder
    for position, (name, index) in enumerate((n, i) for n in raw.class_names for i in range(3)):
        assert raw.train_labels[position] == raw.class_names.index(name)
        expected = pattern(written_label[name], index, (16, 16), 3).transpose(2, 0, 1)
        np.testing.assert_array_equal(raw.train_images[position], expected)


def test_channels_inferred_and_converted(tmp_path: Path) -> None:
    gray = write_folder(tmp_path / "gray", channels=1, per_class=2)
    assert load_image_folder(gray, FolderOptions()).train_images.shape[1] == 1
    # One RGB JPEG among grayscale PNGs: every image becomes RGB, grey ones three equal planes.
    write_image(gray / "cat" / "colour.jpg", np.full((16, 16, 3), (200, 40, 90), dtype=np.uint8))
    raw = load_image_folder(gray, FolderOptions())
    assert raw.train_images.shape == (5, 3, 16, 16)
    first = raw.train_images[0]
    np.testing.assert_array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[0], pattern(0, 0, (16, 16), 1))
    colour = [image for image in raw.train_images if not np.array_equal(image[0], image[1])]
    (only,) = colour  # JPEG is lossy: close to the written colour, not equal
    assert np.abs(only.reshape(3, -1).mean(axis=1) - (200, 40, 90)).max() < 3
    # Forced to one channel: Pillow's ITU-R 601-2 luma of the RGB files.
    rgb = write_folder(tmp_path / "rgb", per_class=2)
    forced = load_image_folder(rgb, FolderOptions(channels=1)).train_images
    pixels = pattern(0, 0, (16, 16), 3).astype(np.float64)
    luma = pixels @ np.array([0.299, 0.587, 0.114])
    assert forced.shape == (4, 1, 16, 16)
    assert np.abs(forced[0, 0] - luma).max() <= 1


def test_resize_and_centre_crop(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    tall = pattern(0, 0, (8, 12), 3)  # 8 wide, 12 high: shorter side already 8, crop rows 2..9
    write_image(root / "a" / "tall.png", tall)
    write_image(root / "a" / "big.png", np.full((20, 30, 3), 77, dtype=np.uint8))  # scaled
    write_image(root / "b" / "gray.png", np.full((10, 10), 150, dtype=np.uint8))  # scaled
    raw = load_image_folder(root, FolderOptions(image_size=8))
    assert raw.train_images.shape == (3, 3, 8, 8)
    np.testing.assert_array_equal(raw.train_images[1], tall[2:10].transpose(2, 0, 1))
    assert (raw.train_images[0] == 77).all()  # a uniform image stays uniform when resized
    assert (raw.train_images[2] == 150).all()
    half = np.zeros((16, 16), dtype=np.uint8)
    half[:, 8:] = 200
    write_image(root / "b" / "half.png", half)
    resized = load_image_folder(root, FolderOptions(image_size=8)).train_images[3, 0]
    assert (resized[:, :3] == 0).all() and (resized[:, 5:] == 200).all()


def test_every_size_matches_torchvision_resize_and_centre_crop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Smaller images are scaled up, larger ones down, odd margins cropped, each exactly as the
    user's own ``Resize(side)`` + ``CenterCrop(side)`` pipeline gives them; the smaller ones are
    counted and logged."""
    from torchvision import transforms

    root = tmp_path / "sizes"
    sizes = [(28, 28), (36, 36), (20, 29), (41, 33), (32, 32), (13, 50)]  # (width, height)
    for index, size in enumerate(sizes):
        write_image(root / ("a" if index % 2 else "b") / f"{index}.png", pattern(index, 1, size, 3))
    write_image(root / "a" / "photo.jpg", pattern(3, 2, (27, 40), 3))  # a lossy file too
    with caplog.at_level("INFO", logger="iocane"):
        raw = load_image_folder(root, FolderOptions(image_size=32))
    users = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32)])
    files = sorted((root / "a").iterdir()) + sorted((root / "b").iterdir())
    expected = [np.asarray(users(Image.open(path).convert("RGB"))) for path in files]
    assert raw.train_images.shape == (7, 3, 32, 32)
    for ours, theirs in zip(raw.train_images, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs.transpose(2, 0, 1))
    assert raw.resized_up_images == 4  # 28x28, 20x29, 13x50, 27x40: a shorter side under 32
    assert "folder: scaled up 4 image(s) smaller than data.image_size 32" in caplog.text


def test_small_images_fail_when_asked_and_are_counted_in_meta(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets", per_class=20, size=(24, 24))
    write_image(root / "cat" / "big.png", pattern(0, 0, (40, 40), 3))
    layout = Layout(tmp_path)
    prepare_data(_config(tmp_path, root, "data.image_size=32"), layout)
    meta = load_prepared(layout).meta
    assert meta["resized_up_images"] == 40 and meta["image_size"] == 32
    with pytest.raises(DataError, match=r"000\.png is 24x24, smaller than data\.image_size 32"):
        prepare_data(
            _config(tmp_path, root, "data.image_size=32", "data.on_small_image=fail"), layout
        )
    with pytest.raises(ConfigError, match=r"data\.on_small_image.*folder only"):
        load_config(write_tiny_params(tmp_path / "p.yaml"), ["data.on_small_image=fail"])


def test_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "split"
    write_folder(root / "train", per_class=10)
    write_folder(root / "test", per_class=3, suffix=".jpg")
    layout = Layout(tmp_path)
    prepare_data(_config(tmp_path, root), layout)
    data = load_prepared(layout)
    assert data.meta["class_names"] == ["cat", "dog"] and data.meta["skipped_images"] == 0
    assert data.meta["counts"] == {"train": 18, "val": 2, "test": 6}  # val from train (0.1)
    assert data.meta["in_channels"] == 3 and data.meta["image_size"] == 16
    write_folder(root / "val", per_class=4)
    prepare_data(_config(tmp_path, root), layout)
    assert load_prepared(layout).meta["counts"] == {"train": 20, "val": 8, "test": 6}


def test_unsplit_folder_is_split_and_trains_small_cnn(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "plain", per_class=20)
    layout = Layout(tmp_path)
    config = _config(tmp_path, root)
    prepare_data(config, layout)
    data = load_prepared(layout)
    assert data.meta["counts"] == {"train": 28, "val": 4, "test": 8}
    model = build_model(data.model_spec(config.model))
    assert model(data.train.images[:5]).shape == (5, 2)
    assert torch.equal(data.test.images[0], data.test.images[0].clamp(0, 1))


def test_truncated_image_fails_or_is_skipped(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets", per_class=20)
    broken = truncate(root / "dog" / "003.png")
    with pytest.raises(DataError, match="cannot read image") as info:
        load_image_folder(root, FolderOptions())
    assert str(broken) in str(info.value) and "on_bad_image" in str(info.value)
    layout = Layout(tmp_path)
    prepare_data(_config(tmp_path, root, "data.on_bad_image=skip"), layout)
    meta = load_prepared(layout).meta
    assert meta["skipped_images"] == 1 and sum(meta["counts"].values()) == 39


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("missing", "nowhere"),
        ("empty_class", "dog"),
        ("single_class", "cat"),
        ("class_sets", "test"),
        ("not_an_image", "notes.png"),
    ],
)
def test_bad_layouts_name_the_path(tmp_path: Path, case: str, named: str) -> None:
    root = tmp_path / "pets"
    if case == "empty_class":
        write_folder(root)
        for path in (root / "dog").iterdir():
            path.unlink()
    elif case == "single_class":
        write_folder(root, classes=("cat",))
    elif case == "class_sets":
        write_folder(root / "train")
        write_folder(root / "test", classes=("cat", "cow"))
    elif case == "not_an_image":
        write_folder(root)
        (root / "cat" / "notes.png").write_text("not a png")
    root = root / "nowhere" if case == "missing" else root
    with pytest.raises(DataError) as info:
        check_data_source("folder", str(root), download=False)
        load_image_folder(root, FolderOptions())
    assert named in str(info.value) and str(tmp_path) in str(info.value)


def test_sizes_that_cannot_be_kept(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets")
    odd = write_image(root / "cat" / "odd.png", pattern(0, 0, (12, 12), 3))
    with pytest.raises(DataError, match="differ in size") as info:
        load_image_folder(root, FolderOptions())
    assert str(odd) in str(info.value)
    with pytest.raises(DataError, match=r"smaller than data\.image_size 14") as info:
        load_image_folder(root, FolderOptions(image_size=14, on_small_image="fail"))
    assert str(odd) in str(info.value) and "on_small_image" in str(info.value)
    wide = write_folder(tmp_path / "wide", size=(12, 8))
    with pytest.raises(DataError, match="not square"):
        load_image_folder(wide, FolderOptions())


def test_folder_keys_are_checked(tmp_path: Path) -> None:
    params = write_tiny_params(tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match=r"data\.image_size.*folder only"):
        load_config(params, ["data.image_size=32"])
    with pytest.raises(ConfigError, match=r"data\.channels"):
        load_config(params, ["data.dataset=folder", "data.root=/x", "data.channels=2"])
    with pytest.raises(ConfigError, match=r"data\.root"):
        load_config(params, ["data.dataset=folder", "data.root=null"])


def test_pillow_reads_every_listed_format(tmp_path: Path) -> None:
    root = tmp_path / "formats"
    for index, suffix in enumerate((".png", ".jpg", ".webp", ".bmp", ".tiff")):
        write_image(root / ("a" if index % 2 else "b") / f"x{suffix}", pattern(0, 0, (8, 8), 3))
    assert Image.open(root / "b" / "x.webp").format == "WEBP"
    raw = load_image_folder(root, FolderOptions())
    assert raw.train_images.shape == (5, 3, 8, 8)


def test_long_reads_log_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import iocane.data.folder as folder

    monkeypatch.setattr(folder, "PROGRESS_SECONDS", 0.0)  # every image counts as a long read
    root = write_folder(tmp_path / "pets", per_class=2)
    with caplog.at_level("INFO", logger="iocane"):
        load_image_folder(root, FolderOptions())
    assert "folder: read 4 of 4 images" in caplog.text


def test_digits_prepare_is_unchanged_by_the_folder_keys(tmp_path: Path) -> None:
    """The default run's prepared data, pinned: its fingerprint before the folder dataset
    existed (commit 24fe069), and no folder-only entry in its meta.json."""
    layout = Layout(tmp_path)
    prepare_data(load_config(PROJECT_ROOT / "params.yaml"), layout)
    meta = load_prepared(layout).meta
    assert meta["fingerprint"] == (
        "25c2bc283992910e090263c76916d8efc944f9f56b4e9aa69233999494940b86"
    )
    assert "skipped_images" not in meta and "resized_up_images" not in meta
