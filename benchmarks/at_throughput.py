"""Images per second of one PGD-k adversarial-training epoch: iocane's trainer against a plain
reference loop and against IBM ART's ``AdversarialTrainerMadryPGD``, in one process.

All three train the same model from the same initial weights on the same images, with the same
batch size, eps, step size, PGD steps and one random start, and all train on adversarial
examples only (``train.adv_weight=1``, the only mix ART's Madry trainer offers). What each one
times is a whole epoch as a user would run it:

- ``iocane``: ``iocane.training.loop.fit`` for one epoch, including the clean validation pass and
  the
  atomic checkpoint it writes (a 256-image validation split);
- ``plain``: the basic loop of the design note ``shared/seeds/000_...txt`` (attack, loss, step)
  over a shuffling ``DataLoader``, with the textbook PGD of Madry and Kolter's tutorial: the
  attack's gradient comes from ``loss.backward()``, the model stays in train mode;
- ``art``: ``AdversarialTrainerMadryPGD(PyTorchClassifier(...)).fit(x, y)`` on numpy arrays.

Each trainer runs ``--repeats`` times, the order rotating between rounds so that drift in the
machine's load spreads over all three; the medians give the ratios. Targets (issue 6): iocane
at least as fast as the plain loop, at least 3x ART.

    .venv/bin/python benchmarks/at_throughput.py            # Fashion-MNIST when Debian's is there
    .venv/bin/python benchmarks/at_throughput.py --set data.dataset=digits --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from attacks import PGD
from iocane.base.config import Config, load_config, replace
from iocane.base.layout import Layout
from iocane.base.settings import resolve_device
from iocane.data.prepared import PreparedData, Split, load_prepared, prepare_data
from iocane.training.hardware import resolve_hardware
from iocane.training.loop import fit
from iocane.training.recipes import AdversarialRecipe
from models import build_model

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
DEFAULTS = [
    "data.dataset=fashion_mnist",
    f"data.root={FASHION_ROOT}",
    "data.limit_train=4096",
    "model.name=small_cnn",
    "train.batch_size=128",
    "train.steps=7",
    "train.eps=0.1",
    "train.step_size=0.025",
    "train.adv_weight=1.0",
    "train.eps_ramp_epochs=0",
]


def textbook_pgd(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, alpha: float, k: int
) -> torch.Tensor:
    """PGD as the tutorials write it: uniform start, signed-gradient steps, clip to the ball."""
    delta = torch.empty_like(images).uniform_(-eps, eps)
    delta = ((images + delta).clamp(0, 1) - images).requires_grad_(True)
    for _ in range(k):
        loss = F.cross_entropy(model(images + delta), labels)
        loss.backward()
        delta.data = (delta + alpha * delta.grad.detach().sign()).clamp(-eps, eps)
        delta.data = (images + delta.data).clamp(0, 1) - images
        delta.grad.zero_()
    return (images + delta).detach()


def plain_epoch(model: nn.Module, data: PreparedData, config: Config, device: torch.device) -> None:
    train = config.train
    optimizer = torch.optim.SGD(
        model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
    )
    loader = DataLoader(
        TensorDataset(data.train.images, data.train.labels),
        batch_size=train.batch_size,
        shuffle=True,
    )
    model.train()
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        adversarial = textbook_pgd(model, images, labels, train.eps, train.step_size, train.steps)
        loss = F.cross_entropy(model(adversarial), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def iocane_epoch(
    model: nn.Module, data: PreparedData, config: Config, device: torch.device, spec
) -> None:
    train = config.train
    recipe = AdversarialRecipe.from_config(train)  # DEFAULTS: pgd, no eps ramp
    with tempfile.TemporaryDirectory() as directory:
        fit(
            stage="train",
            model=model,
            spec=spec,
            data=data,
            optim=replace(train, epochs=1),
            recipe=recipe,
            val_attack=None,
            layout=Layout(Path(directory)),
            seed=0,
            run_key="throughput",
            device=device,
            hardware=resolve_hardware(device, config.runtime),
        )


def art_epoch(model: nn.Module, data: PreparedData, config: Config, device: torch.device) -> None:
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    train = config.train
    classifier = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(
            model.parameters(),
            lr=train.lr,
            momentum=train.momentum,
            weight_decay=train.weight_decay,
        ),
        input_shape=tuple(data.train.images.shape[1:]),
        nb_classes=int(data.train.labels.max()) + 1,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    trainer = AdversarialTrainerMadryPGD(
        classifier,
        nb_epochs=1,
        batch_size=train.batch_size,
        eps=train.eps,
        eps_step=train.step_size,
        max_iter=train.steps,
        num_random_init=1,
    )
    trainer.fit(data.train.images.numpy(), data.train.labels.numpy())


def adversarial_accuracy(model: nn.Module, split: Split, config: Config, device) -> float:
    """A sanity figure: each trainer must have produced a model, not just spent the time."""
    model.eval()
    attack = PGD(eps=config.train.eps, steps=config.train.steps, seed=1)
    images, labels = split.images.to(device), split.labels.to(device)
    adversarial = attack(model, images, labels)
    with torch.no_grad():
        return (model(adversarial).argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per trainer")
    parser.add_argument("--skip-art", action="store_true", help="without ART installed")
    args = parser.parse_args()
    defaults = DEFAULTS if FASHION_ROOT.exists() else ["data.dataset=digits"]
    config = load_config(PROJECT_ROOT / "params.yaml", [*defaults, *args.set])
    device = resolve_device()
    with tempfile.TemporaryDirectory() as directory:
        layout = Layout(Path(directory))
        prepare_data(config, layout)
        data = load_prepared(layout)
    # A small validation split: iocane's epoch includes its clean validation pass.
    data = dataclasses.replace(data, val=Split(data.val.images[:256], data.val.labels[:256]))
    spec = data.model_spec(config.model)
    torch.manual_seed(config.seed)
    initial = build_model(spec).state_dict()

    def trainers(data: PreparedData) -> dict[str, Callable[[nn.Module], None]]:
        chosen = {
            "iocane": lambda model: iocane_epoch(model, data, config, device, spec),
            "plain": lambda model: plain_epoch(model, data, config, device),
        }
        if not args.skip_art:
            chosen["art"] = lambda model: art_epoch(model, data, config, device)
        return chosen

    # One untimed pass of each on a few batches: the first call of a process pays for lazy
    # initialisation (kernels, allocator, imports), which would count against whoever runs first.
    few = dataclasses.replace(
        data,
        train=Split(
            data.train.images[: 4 * config.train.batch_size],
            data.train.labels[: 4 * config.train.batch_size],
        ),
    )
    for warm_up in trainers(few).values():
        warm_up(build_model(spec).to(device))
    timed = trainers(data)
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    accuracy: dict[str, float] = {}
    names = list(timed)
    for round_ in range(args.repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            model = build_model(spec).to(device)
            model.load_state_dict(copy.deepcopy(initial))
            torch.manual_seed(config.seed + round_)
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            timed[name](model)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - started)
            accuracy[name] = adversarial_accuracy(model, data.val, config, device)

    n_images = len(data.train)
    median = {name: statistics.median(times) for name, times in seconds.items()}
    throughput = {name: n_images / median[name] for name in median}
    report = {
        "benchmark": "at_throughput",
        "dataset": config.data.dataset,
        "train_images": n_images,
        "model": config.model.name,
        "batch_size": config.train.batch_size,
        "pgd_steps": config.train.steps,
        "eps": config.train.eps,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "runtime": config.to_dict()["runtime"],
        "seconds_per_epoch": {
            name: [round(t, 2) for t in times] for name, times in seconds.items()
        },
        "images_per_second": {name: round(value, 1) for name, value in throughput.items()},
        "val_pgd_accuracy_after_last_epoch": {k: round(v, 3) for k, v in accuracy.items()},
        "ratio_iocane_over_plain": round(throughput["iocane"] / throughput["plain"], 3),
    }
    if "art" in throughput:
        report["ratio_iocane_over_art"] = round(throughput["iocane"] / throughput["art"], 3)
    report["targets"] = {
        "iocane_at_least_plain": report["ratio_iocane_over_plain"] >= 1.0,
        "iocane_at_least_3x_art": report.get("ratio_iocane_over_art", 0) >= 3.0,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
