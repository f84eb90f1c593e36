"""iocane's L0 attacks (``pgd_l0``, ``sparse_rs``) against torchattacks' L0 attacks (OnePixel,
Pixle, SparseFool, JSMA) at the same pixel budgets on the same points: robust accuracy and
seconds of each, printed as one JSON document (issue 31, the L0 slice of ``benchmarks/threats.py``).

torchattacks is never a dependency of iocane: the benchmark imports it from a folder of its own,
installed for it alone, without its dependencies (those it imports, numpy, scipy and requests,
are in iocane's environment already)::

    .venv/bin/python -m pip install --no-deps --target /tmp/ta-env torchattacks
    .venv/bin/python benchmarks/l0_vs_torchattacks.py --n-samples 1000 --eps 12 \\
        --model-dir /tmp/l0-models --out benchmarks/results/l0-vs-torchattacks-2026-12-07.json

Models: Fashion-MNIST (``configs/fashion_mnist.yaml``'s compact_cnn) trained by the project's
own stages, shortly (``--epochs``, default 2, after 1 warmup epoch, on 20,000 training images):
the natural warmup model and the Linf-hardened train model, kept in ``--model-dir`` to be reused
by a later run. Seconds depend on the machine: the JSON says how many torch threads ran.

The pixel budget counts a pixel once whatever its channels (``attacks.threat.L0``). OnePixel and
Pixle take a budget (OnePixel ``pixels``; Pixle one-pixel patches, one per restart, ``eps``
restarts, its iterations sized to Sparse-RS's queries). SparseFool and JSMA search for a small
perturbation without a bound (JSMA's ``gamma``, the share of features it may change, is set to
the budget, but it changes two at a time): for every attack the pixels changed are counted and a
point counts as broken only when the model is fooled within the budget. Robust accuracy is over
all points (a point misclassified clean is not robust); attacks run on the clean-correct ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from attacks.registry import Threat, entry, preset_attacks
from attacks.threat import changed_pixels
from iocane.base.config import load_config
from iocane.base.layout import Layout
from iocane.data.prepared import load_prepared, prepare_data
from iocane.model_files import load_model
from iocane.training.hardware import subnormals_flushed
from tasks.train import run_train
from tasks.warmup import run_warmup

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TORCHATTACKS_HOME = Path("/tmp/ta-env")  # pip install --no-deps --target /tmp/ta-env torchattacks
BATCH = 250


def import_torchattacks(home: Path = TORCHATTACKS_HOME):
    """torchattacks from its own folder, put on sys.path here only."""
    if str(home) not in sys.path:
        sys.path.insert(0, str(home))
    try:
        import torchattacks  # never an iocane dependency: the benchmark only
    except ImportError as error:
        raise SystemExit(
            f"torchattacks is not in {home}: .venv/bin/python -m pip install --no-deps "
            f"--target {home} torchattacks ({error})"
        ) from None
    return torchattacks


def torchattacks_l0(model: nn.Module, eps: int, shape: torch.Size, queries: int) -> dict:
    """torchattacks' L0 attacks at ``eps`` pixels, by name."""
    ta = import_torchattacks()
    channels, height, width = shape[1:]
    return {
        "onepixel": ta.OnePixel(model, pixels=eps),
        "pixle": ta.Pixle(
            model,
            x_dimensions=(1, 1),
            y_dimensions=(1, 1),
            restarts=eps,
            max_iterations=max(1, queries // eps),
        ),
        "sparsefool": ta.SparseFool(model),
        "jsma": ta.JSMA(model, gamma=eps / (channels * height * width)),
    }


def _run(
    attack: Callable, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    adversarial = torch.cat(
        [attack(images[i : i + BATCH], labels[i : i + BATCH]) for i in range(0, len(images), BATCH)]
    )
    return adversarial.detach(), time.perf_counter() - started


def _broken(
    model: nn.Module, images: torch.Tensor, adversarial: torch.Tensor, labels, eps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fooled within the budget, pixels changed) per point."""
    pixels = changed_pixels(adversarial - images).flatten(1).sum(dim=1)
    with torch.no_grad():
        fooled = torch.cat(
            [
                model(adversarial[i : i + BATCH]).argmax(1) != labels[i : i + BATCH]
                for i in range(0, len(labels), BATCH)
            ]
        )
    return fooled & (pixels <= eps), pixels


def compare_l0(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_values: Sequence[int],
    preset: str = "standard",
    seed: int = 0,
    skip: Sequence[str] = (),
) -> dict:
    """For each eps: robust accuracy and seconds of iocane's L0 attacks (the preset's, and their
    per-point worst case) and of torchattacks', on the same clean-correct points of ``images``."""
    # Channels-last, as evaluate_robustness runs models (for both sides: the same network).
    model = model.to(memory_format=torch.channels_last).eval()
    with torch.no_grad():
        clean_correct = model(images).argmax(1) == labels
    points, point_labels = images[clean_correct], labels[clean_correct]
    n = len(labels)
    report: dict = {"n_samples": n, "clean_accuracy": clean_correct.float().mean().item()}
    queries = int(entry("sparse_rs").budgets[preset]["n_queries"])
    for eps in eps_values:
        ours = preset_attacks(preset, Threat(norm="L0", eps=eps, seed=seed))
        theirs = torchattacks_l0(model, eps, images.shape, queries)
        attacks: dict[str, Callable] = {
            **{f"iocane_{name}": _bind(attack, model) for name, attack in ours.items()},
            **{f"torchattacks_{name}": attack for name, attack in theirs.items()},
        }
        figures: dict[str, dict] = {}
        worst = torch.zeros(len(point_labels), dtype=torch.bool)
        for name, attack in attacks.items():
            if any(name.endswith(skipped) for skipped in skip):
                continue
            adversarial, seconds = _run(attack, model, points, point_labels)
            broken, pixels = _broken(model, points, adversarial, point_labels, eps)
            if name.startswith("iocane_"):
                worst |= broken
            figures[name] = _figures(broken, pixels, eps, seconds, n)
            print(f"eps {eps} {name}: {figures[name]}", file=sys.stderr)
        iocane_seconds = sum(f["seconds"] for k, f in figures.items() if k.startswith("iocane_"))
        figures["iocane_worst_case"] = {
            "robust_accuracy": round(1 - (worst.sum().item() + (n - len(points))) / n, 4),
            "seconds": round(iocane_seconds, 1),
        }
        report[f"eps_{eps}"] = figures
    return report


def _bind(attack: Callable, model: nn.Module) -> Callable:
    return lambda images, labels: attack(model, images, labels)


def _figures(broken: torch.Tensor, pixels: torch.Tensor, eps: int, seconds: float, n: int) -> dict:
    """An attack's robust accuracy over all ``n`` points (the clean-wrong ones count broken)."""
    clean_wrong = n - len(broken)
    return {
        "robust_accuracy": round(1 - (broken.sum().item() + clean_wrong) / n, 4),
        "seconds": round(seconds, 1),
        "over_budget_points": int((pixels > eps).sum()),  # changed more pixels than eps
        "median_pixels_changed": float(pixels.float().median()) if len(pixels) else 0.0,
    }


def fashion_models(model_dir: Path | None, epochs: int) -> tuple[Mapping[str, nn.Module], dict]:
    """The natural and Linf-hardened Fashion-MNIST models (trained now, or kept from a run
    before in ``model_dir``) and the test set."""
    overrides = [
        "train.budget_minutes=0",
        f"train.epochs={epochs}",
        "warmup.epochs=1",
        "data.limit_train=20000",  # a short model on a shared machine, not the shipped one
    ]
    config = load_config(PROJECT_ROOT / "configs" / "fashion_mnist.yaml", overrides)
    with tempfile.TemporaryDirectory() as directory:
        layout = Layout(Path(directory))
        prepare_data(config, layout)
        test = load_prepared(layout).test
        files = {"natural": None, "hardened": None}
        if model_dir is not None and (model_dir / "hardened.pt").exists():
            files = {name: model_dir / f"{name}.pt" for name in files}
        else:
            started = time.perf_counter()
            run_warmup(config, layout)
            run_train(config, layout)
            print(f"trained in {time.perf_counter() - started:.0f}s", file=sys.stderr)
            files = {"natural": layout.model_file("warmup"), "hardened": layout.model_file("train")}
            if model_dir is not None:
                model_dir.mkdir(parents=True, exist_ok=True)
                for name, file in files.items():
                    (model_dir / f"{name}.pt").write_bytes(file.read_bytes())
        models = {name: load_model(file, "cpu")[0] for name, file in files.items()}
    setup = {
        "dataset": "fashion_mnist",
        "model": "compact_cnn (width 8), configs/fashion_mnist.yaml",
        "training": f"{epochs} PGD-5 Linf 0.1 epochs after 1 natural epoch, 20,000 images",
    }
    return models, {"setup": setup, "test": test}


@subnormals_flushed()  # as iocane's stages run, for both sides
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--eps", type=int, nargs="+", default=[12], help="pixel budgets")
    parser.add_argument("--epochs", type=int, default=2, help="adversarial training epochs")
    parser.add_argument("--model-dir", type=Path, help="keep (or reuse) the trained models here")
    parser.add_argument("--skip", nargs="*", default=[], help="attack names to leave out")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    models, data = fashion_models(args.model_dir, args.epochs)
    test = data["test"]
    images, labels = test.images[: args.n_samples], test.labels[: args.n_samples]
    document = {
        "benchmark": "l0_vs_torchattacks",
        **data["setup"],
        "preset": "standard",
        "torch_threads": torch.get_num_threads(),
        "models": {
            name: compare_l0(model, images, labels, args.eps, skip=args.skip)
            for name, model in models.items()
        },
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
