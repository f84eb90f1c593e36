"""The plain-loop reference of ``benchmarks/budget.py``: adversarial training as the design note
writes it (/work/shared/seeds: PGD examples every batch, then ``0.5 * clean_loss + 0.5 *
adv_loss``), in plain PyTorch, trained for as many whole epochs as a time budget allows.

The network and settings are issue 19's: a 32/64-filter 3x3 CNN with a 256-unit layer, PGD-10
with a random start and step 2.5 * eps / 10, Adam at 1e-3, batch 128, Linf eps 0.1, on images in
[0, 1] (no normalisation). ``--adv-weight 1`` is pure adversarial loss, ``0.5`` the note's mix.
Each epoch is timed; training stops when the next epoch would overrun the budget (the first epoch
always runs, so a budget shorter than one epoch is overrun, and the JSON says so).

``design_note_cnn`` is the factory ``iocane evaluate`` rebuilds the saved state_dict with:

    iocane evaluate --model-file plain.pt --set model.name=benchmarks.plain_loop:design_note_cnn \\
        --set model.width=0 --set 'model.mean=[0.0]' --set 'model.std=[1.0]'

    .venv/bin/python benchmarks/plain_loop.py --budget-minutes 5 --adv-weight 1 --out plain.pt

Prints one JSON document: epochs, wall and CPU seconds, seconds per epoch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


def design_note_cnn(channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Module:
    """Two 3x3 convolutions (32 and 64 filters, each followed by 2x2 max pooling), a 256-unit
    layer, and the classifier."""
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * side * side, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    )


def load_idx(root: Path, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's IDX files (``train`` or ``t10k``), images in [0, 1]."""
    with gzip.open(root / f"{split}-images-idx3-ubyte.gz") as stream:
        images = np.frombuffer(stream.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(root / f"{split}-labels-idx1-ubyte.gz") as stream:
        labels = np.frombuffer(stream.read(), np.uint8, offset=8)
    images, labels = images[:limit], labels[:limit]
    return torch.from_numpy(images.astype(np.float32) / 255), torch.from_numpy(
        labels.astype(np.int64)
    )


def pgd_attack(
    model: nn.Module,
    loss_fn: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epsilon: float,
    alpha: float,
    num_iter: int,
) -> torch.Tensor:
    """Linf PGD from a uniform random start in the eps ball, kept in [0, 1]."""
    delta = torch.empty_like(images).uniform_(-epsilon, epsilon)
    delta = ((images + delta).clamp(0, 1) - images).requires_grad_(True)
    for _ in range(num_iter):
        loss = loss_fn(model(images + delta), labels)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta + alpha * grad.sign()).clamp(-epsilon, epsilon)
        delta = ((images + delta).clamp(0, 1) - images).detach().requires_grad_(True)
    return (images + delta).detach()


def train(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    budget_seconds: float,
    adv_weight: float,
    eps: float = 0.1,
    steps: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    network: Callable[[], nn.Module] = design_note_cnn,
    max_epochs: int | None = None,
) -> tuple[nn.Module, dict]:
    """The design note's loop for as many whole epochs as ``budget_seconds`` allows (at most
    ``max_epochs``), on ``network()`` built right after seeding."""
    torch.manual_seed(seed)
    model = network()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    wall, cpu = time.perf_counter(), time.process_time()
    epoch_seconds: list[float] = []
    while not epoch_seconds or (
        sum(epoch_seconds) + epoch_seconds[-1] <= budget_seconds
        and (max_epochs is None or len(epoch_seconds) < max_epochs)
    ):
        started = time.perf_counter()
        for batch in torch.randperm(len(labels)).split(batch_size):
            x, y = images[batch], labels[batch]
            adv = pgd_attack(
                model, loss_fn, x, y, epsilon=eps, alpha=2.5 * eps / steps, num_iter=steps
            )
            adv_loss = loss_fn(model(adv), y)
            clean_loss = loss_fn(model(x), y) if adv_weight < 1 else 0.0
            total_loss = (1 - adv_weight) * clean_loss + adv_weight * adv_loss
            optimizer.zero_grad()
            total_loss.backward()
            optimizer.step()
        epoch_seconds.append(time.perf_counter() - started)
    record = {
        "epochs": len(epoch_seconds),
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
        "epoch_seconds": [round(seconds, 1) for seconds in epoch_seconds],
        "overran_budget": sum(epoch_seconds) > budget_seconds,
    }
    return model, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget-minutes", type=float, required=True)
    parser.add_argument("--adv-weight", type=float, default=1.0, help="1 = pure adversarial")
    parser.add_argument("--limit-train", type=int, default=None, help="the first N images")
    parser.add_argument("--root", type=Path, default=FASHION_ROOT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="where the state_dict goes")
    args = parser.parse_args()
    images, labels = load_idx(args.root, "train", args.limit_train)
    model, record = train(
        images,
        labels,
        budget_seconds=60 * args.budget_minutes,
        adv_weight=args.adv_weight,
        seed=args.seed,
    )
    torch.save(model.state_dict(), args.out)
    print(json.dumps({"adv_weight": args.adv_weight, "images": len(labels), **record}))


if __name__ == "__main__":
    main()
