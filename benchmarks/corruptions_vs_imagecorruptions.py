"""iocane's common corruptions (``attacks/corruptions``) against the reference package
``imagecorruptions`` (Michaelis et al. 2019), on the same images.

The reference takes one H x W (x 3) uint8 image of 32 pixels a side or more and always works on
three channels. The benchmark feeds both the same images: Fashion-MNIST test images (Debian's
``dataset-fashion-mnist``, padded 28 -> 32 with black, as gray RGB) and colour images it draws
(smooth gradients with discs, 40 x 48, so non-square). iocane runs on the same pixels as float64
(the reference computes in float64) and, for the figures users get, float32.

Per corruption and severity it reports:

- deterministic ones (defocus, zoom, brightness, contrast, pixelate, jpeg; motion blur given the
  reference's angle; fog given the reference's height map): the share of 8-bit values equal to
  the reference's (iocane's floats quantised as the reference quantises: ``np.uint8`` floors,
  Pillow rounds) and the largest difference in 8-bit levels;
- random ones (the noises, glass, motion, snow, fog, elastic): the mean and standard deviation of
  the change (output - input, in 8-bit levels) and the mean absolute change, both sides, and
  whether the mean absolute changes agree within the stated tolerance.

The reference is installed for the benchmark only (``pip install --target``; never a project
dependency). It predates NumPy 2, SciPy 1.14 and scikit-image 0.19: ``_reference`` restores the
names it imports (``np.float_``, ``scipy.ndimage.interpolation``, ``pkg_resources``, the
``multichannel`` argument) without touching its arithmetic.

    .venv/bin/python benchmarks/corruptions_vs_imagecorruptions.py [--reference-path /tmp/ic-env]
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import subprocess
import sys
import types
from datetime import date
from pathlib import Path

import numpy as np
import torch

from attacks.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from attacks.corruptions.blur import MOTION
from attacks.corruptions.filters import motion_blur
from attacks.corruptions.weather import FOG, fog_from_fractal

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
REFERENCE_PACKAGES = (
    "imagecorruptions==1.1.2",
    "scikit-image",
    "opencv-python-headless",
    "imageio",
    "tifffile",
    "lazy_loader",
)
DETERMINISTIC = (
    "defocus_blur",
    "zoom_blur",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
)
PILLOW_ROUNDED = ("pixelate", "jpeg_compression")  # the reference's output comes from Pillow
# Random corruptions agree when their mean absolute changes differ by at most this share, or 0.5
# levels (a small change), or SPREAD standard errors of the difference (a change that varies a
# lot from image to image).
RELATIVE_TOLERANCE = 0.05
LEVEL_TOLERANCE = 0.5
SPREAD = 3.0


def _reference(path: Path) -> types.ModuleType:
    """``imagecorruptions`` from ``path`` (installed there when missing), made importable on
    today's NumPy, SciPy and scikit-image."""
    if not (path / "imagecorruptions").exists():
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(path),
            "--no-deps",
        ]
        subprocess.run([*command, *REFERENCE_PACKAGES], check=True)
    sys.path.append(str(path))  # appended: the project's NumPy, SciPy and Pillow stay first
    np.float_ = np.float64  # removed in NumPy 2; the reference's fractal allocates with it
    import scipy.ndimage

    sys.modules.setdefault("scipy.ndimage.interpolation", scipy.ndimage)
    stub = types.ModuleType("pkg_resources")
    stub.resource_filename = lambda package, name: str(path / package / name)  # frost only
    sys.modules.setdefault("pkg_resources", stub)
    module = importlib.import_module("imagecorruptions")
    corruptions = importlib.import_module("imagecorruptions.corruptions")
    gaussian = corruptions.gaussian

    def gaussian_with_channels(image, *args, multichannel=None, **kwargs):
        # scikit-image 0.19 renamed multichannel=True to channel_axis=-1 (same filter).
        if multichannel:
            kwargs["channel_axis"] = -1
        return gaussian(image, *args, **kwargs)

    corruptions.gaussian = gaussian_with_channels
    return module


def fashion_images(count: int) -> np.ndarray:
    """The first ``count`` Fashion-MNIST test images, padded to 32 x 32, as gray RGB uint8."""
    with gzip.open(FASHION_TEST) as stream:
        pixels = np.frombuffer(stream.read(), dtype=np.uint8, offset=16)
    images = pixels.reshape(-1, 28, 28)[:count]
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=-1)


def colour_images(count: int, height: int = 40, width: int = 48) -> np.ndarray:
    """Smooth colour gradients with a few discs: photographs' smoothness and edges, any colour."""
    rng = np.random.default_rng(2026)
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    images = []
    for _ in range(count):
        tilt = rng.uniform(-1, 1, size=(3, 2))
        image = 0.5 + 0.4 * (tilt[:, :1, None] * rows + tilt[:, 1:, None] * cols) - 0.2
        for _disc in range(3):
            centre, radius = rng.uniform(0, 1, size=2), rng.uniform(0.1, 0.3)
            inside = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2
            image[:, inside] = rng.uniform(0, 1, size=(3, 1))
        images.append((np.clip(image, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8))
    return np.stack(images)


def to_tensor(images: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).to(dtype) / 255


def quantise(images: torch.Tensor, name: str) -> np.ndarray:
    """iocane's floats as the reference quantises its own: Pillow rounds, ``np.uint8`` floors
    (so a value one rounding error under a whole level drops a level on both sides alike)."""
    levels = images.permute(0, 2, 3, 1).double().numpy() * 255
    return np.round(levels) if name in PILLOW_ROUNDED else np.floor(levels)


def agreement(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    difference = np.abs(ours - reference.astype(np.float64))
    return {
        "equal_share": float((difference == 0).mean()),
        "max_level_difference": float(difference.max()),
    }


def reference_outputs(
    module: types.ModuleType, images: np.ndarray, name: str, severity: int
) -> np.ndarray:
    outputs = []
    for index, image in enumerate(images):
        np.random.seed(1000 * severity + index)
        outputs.append(module.corrupt(image, severity=severity, corruption_name=name))
    return np.stack(outputs)


def change_statistics(outputs: np.ndarray, images: np.ndarray) -> dict[str, float]:
    """The change in 8-bit levels: its mean and spread, its mean size, and that mean's standard
    error across images (the random draws differ per image)."""
    change = outputs.astype(np.float64) - images.astype(np.float64)
    per_image = np.abs(change).reshape(len(change), -1).mean(axis=1)
    return {
        "mean": float(change.mean()),
        "std": float(change.std()),
        "mean_abs": float(per_image.mean()),
        "mean_abs_standard_error": float(per_image.std(ddof=1) / np.sqrt(len(per_image))),
    }


def given_randomness(
    module: types.ModuleType, images: np.ndarray, name: str, severity: int
) -> np.ndarray:
    """iocane's motion blur or fog fed the reference's own random draw (its angle, its height
    map, taken by replaying the reference's seed), 8-bit as the reference quantises."""
    corruptions = importlib.import_module("imagecorruptions.corruptions")
    outputs = []
    for index, image in enumerate(images):
        np.random.seed(1000 * severity + index)
        tensor = to_tensor(image[None], torch.float64)
        if name == "motion_blur":
            angle = torch.tensor([np.random.uniform(-45, 45)], dtype=torch.float64)
            result = motion_blur(tensor * 255, *MOTION[severity - 1], angle).clamp(0, 255) / 255
        else:
            size = 1 << (max(image.shape) - 1).bit_length()
            fractal = torch.from_numpy(
                corruptions.plasma_fractal(mapsize=size, wibbledecay=FOG[severity - 1][1])
            )
            result = fog_from_fractal(tensor, severity, fractal[None]).clamp(0, 1)
        outputs.append(quantise(result, name)[0])
    return np.stack(outputs)


def compare(
    module: types.ModuleType, images: np.ndarray, name: str, severity: int
) -> dict[str, object]:
    reference = reference_outputs(module, images, name, severity)
    ours64 = corrupt(to_tensor(images, torch.float64), name, severity, seed=severity)
    ours32 = corrupt(to_tensor(images, torch.float32), name, severity, seed=severity)
    row: dict[str, object] = {
        "change_reference": change_statistics(reference, images),
        "change_iocane": change_statistics(quantise(ours32, name), images),
    }
    if name in DETERMINISTIC:
        row["float64"] = agreement(quantise(ours64, name), reference)
        row["float32"] = agreement(quantise(ours32, name), reference)
    elif name in ("motion_blur", "fog"):
        row["given_reference_draw"] = agreement(
            given_randomness(module, images, name, severity), reference
        )
    row["mean_abs_change_agrees"] = changes_agree(row["change_reference"], row["change_iocane"])  # type: ignore[arg-type]
    return row


def changes_agree(theirs: dict[str, float], ours: dict[str, float]) -> bool:
    """Mean absolute changes within 5%, or 0.5 levels, or three standard errors of their
    difference (fog's height maps swing an image's change far more than 5%)."""
    gap = abs(ours["mean_abs"] - theirs["mean_abs"])
    noise = SPREAD * float(
        np.hypot(ours["mean_abs_standard_error"], theirs["mean_abs_standard_error"])
    )
    return bool(gap <= max(RELATIVE_TOLERANCE * theirs["mean_abs"], LEVEL_TOLERANCE, noise))


def gray_path(
    module: types.ModuleType, images: np.ndarray, name: str, severity: int
) -> dict[str, float]:
    """iocane's one-channel images against the reference's gray-as-RGB output (channel 0)."""
    reference = reference_outputs(module, images, name, severity)[..., :1]
    ours = corrupt(to_tensor(images[..., :1], torch.float64), name, severity, seed=severity)
    return agreement(quantise(ours, name), reference)


# Why a corruption's pixels are not the reference's (its summary row quotes this).
WHY_THEY_DIFFER = {
    "gaussian_noise": "random: torch's draws, not NumPy's; compared in distribution",
    "shot_noise": "random: torch's draws, not NumPy's; compared in distribution",
    "impulse_noise": "random: torch's draws, not NumPy's; compared in distribution",
    "glass_blur": "random neighbours: compared in distribution",
    "motion_blur": "random angle; given the reference's angle, equal on gray images and within "
    "one level on colour (the floor of a float sum that lands on a whole level)",
    "zoom_blur": "the reference accumulates in float32: float32 inputs match it best; a value a "
    "rounding error under a whole level floors one level down on one side",
    "snow": "random flakes and angle: compared in distribution",
    "fog": "random height map: compared in distribution; given the reference's map, equal",
    "brightness": "the reference goes through HSV, iocane scales the channels (the same map): "
    "equal on gray images, a level apart where float rounding crosses a whole level",
    "elastic_transform": "random displacement field: compared in distribution",
    "pixelate": "Pillow averages in 8-bit fixed point and rounds between its two passes; iocane "
    "keeps floats: at most one level apart",
}


def summary(results: dict[str, dict[str, dict[str, dict]]]) -> dict[str, dict[str, object]]:
    """Per corruption: the lowest share of equal values and the largest level difference over
    its severities and image sets, whether every change statistic agreed, and why they differ."""
    rows = {}
    for name, severities in results.items():
        shares, gaps, agree = [], [], True
        for row in severities.values():
            for label, figures in row.items():
                if label != "gray_one_channel":
                    agree &= figures["mean_abs_change_agrees"]
                for key in ("float64", "given_reference_draw", "equal_share"):
                    exact = figures if key == "equal_share" else figures.get(key)
                    if exact and "equal_share" in exact:
                        shares.append(exact["equal_share"])
                        gaps.append(exact["max_level_difference"])
                        break
        rows[name] = {
            "lowest_equal_share": min(shares) if shares else None,
            "largest_level_difference": max(gaps) if gaps else None,
            "change_statistics_agree": bool(agree),
            "why_they_differ": WHY_THEY_DIFFER.get(name, "equal"),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-path", type=Path, default=Path("/tmp/ic-env"))
    parser.add_argument("--fashion", type=int, default=32, help="Fashion-MNIST test images")
    parser.add_argument("--colour", type=int, default=16, help="colour images drawn")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    module = _reference(args.reference_path)
    sets = {
        "fashion_mnist_32x32_gray_rgb": fashion_images(args.fashion),
        "colour_40x48": colour_images(args.colour),
    }
    results: dict[str, object] = {}
    for name in CORRUPTIONS:
        results[name] = {}
        for severity in SEVERITIES:
            row = {label: compare(module, images, name, severity) for label, images in sets.items()}
            if name in DETERMINISTIC:
                row["gray_one_channel"] = gray_path(
                    module, sets["fashion_mnist_32x32_gray_rgb"], name, severity
                )
            results[name][f"s{severity}"] = row  # type: ignore[index]
            print(name, severity, json.dumps(row), flush=True)
    document = {
        "benchmark": "corruptions_vs_imagecorruptions",
        "date": date.today().isoformat(),
        "reference": "imagecorruptions 1.1.2",
        "images": {label: list(images.shape) for label, images in sets.items()},
        "tolerance": {
            "relative": RELATIVE_TOLERANCE,
            "levels": LEVEL_TOLERANCE,
            "standard_errors": SPREAD,
        },
        "left_out": {"frost": "blends crops of the reference's six bundled photographs"},
        "summary": summary(results),  # type: ignore[arg-type]
        "results": results,
    }
    output = (
        args.output
        or PROJECT_ROOT
        / "benchmarks"
        / "results"
        / f"corruptions-vs-imagecorruptions-{date.today()}.json"
    )
    output.write_text(json.dumps(document, indent=2) + "\n")
    print(output)


if __name__ == "__main__":
    main()
