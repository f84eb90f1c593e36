"""Why iocane trained the plain loop's network less robustly than the plain loop (issue 19): its
initialisation and its input normalisation, one at a time and together.

The plain loop of ``benchmarks/plain_loop.py`` (its network, PGD-10 with a random start, Adam at
1e-3, batch 128, Linf eps 0.1, pure adversarial loss, on all 60,000 Fashion-MNIST training
images) in four variants of the network:

- ``plain``: as the loop builds it: PyTorch's default initialisation, images in [0, 1];
- ``he``: He initialisation of the ReLU layers (iocane's ``madry_cnn`` and ``small_cnn``);
- ``norm``: a ``Normalize`` layer in front (iocane's models, with the data's mean and std);
- ``he_norm``: both, which is what iocane's ``compact_cnn`` was before this measurement.

Each variant trains ``--epochs`` epochs from the same seed, in its own process on one thread (the
variants run side by side, one per core; one thread keeps each result independent of the
machine's core count), and is judged on the first 1,000 test images: clean accuracy, and PGD-40
(step 0.01, random start) accuracy. This is a screening attack, not the ``standard`` suite:
compare the variants with each other, not with the suite's figures.

    .venv/bin/python benchmarks/init_ablation.py [--epochs 1] [--variants plain,he,norm,he_norm]

Prints one JSON document and writes ``benchmarks/results/init-ablation-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import torch
from torch import nn

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import plain_loop  # noqa: E402
from models.normalize import Normalize  # noqa: E402

VARIANTS = ("plain", "he", "norm", "he_norm")
FASHION_MEAN, FASHION_STD = [0.2860], [0.3530]  # of the 60,000 training images
N_TEST = 1000


def build(variant: str) -> nn.Module:
    """The plain loop's network in ``variant`` (drawn from the generator the loop just seeded)."""
    net = plain_loop.design_note_cnn()
    if variant in ("he", "he_norm"):
        for layer in list(net)[:-1]:  # the ReLU layers; the classifier keeps its default
            if isinstance(layer, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
    if variant in ("norm", "he_norm"):
        return nn.Sequential(Normalize(FASHION_MEAN, FASHION_STD), net)
    return net


def run(variant: str, epochs: int, seed: int = 0) -> dict:
    """Train ``variant`` with the plain loop and judge it on the first 1,000 test images."""
    torch.set_num_threads(1)
    images, labels = plain_loop.load_idx(plain_loop.FASHION_ROOT, "train")
    test_images, test_labels = plain_loop.load_idx(plain_loop.FASHION_ROOT, "t10k", N_TEST)
    model, record = plain_loop.train(
        images,
        labels,
        budget_seconds=float("inf"),
        adv_weight=1.0,
        seed=seed,
        network=partial(build, variant),
        max_epochs=epochs,
    )
    model.eval()
    with torch.no_grad():
        clean = (model(test_images).argmax(1) == test_labels).float().mean().item()
    torch.manual_seed(seed + 1)
    adversarial = plain_loop.pgd_attack(
        model,
        nn.CrossEntropyLoss(),
        test_images,
        test_labels,
        epsilon=0.1,
        alpha=0.01,
        num_iter=40,
    )
    with torch.no_grad():
        robust = (model(adversarial).argmax(1) == test_labels).float().mean().item()
    return {
        "variant": variant,
        "epochs": epochs,
        "clean_accuracy": round(clean, 4),
        "pgd40_accuracy": round(robust, 4),
        "train_seconds": record["wall_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(run, variants, [args.epochs] * len(variants)))
    report = {
        "benchmark": "init_ablation",
        "dataset": "fashion_mnist",
        "threat": "Linf eps 0.1",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "attack": "PGD-40, step 0.01, random start, first 1,000 test images",
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"init-ablation-{time.strftime('%Y-%m-%d')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
