"""One trainer's timed epoch (or the FLOP count and the machine's peak) in a process of its own,
for ``benchmarks/at_throughput.py``.

    python benchmarks/at_throughput_worker.py JOB_DIR TASK THREADS SUBNORMALS

``TASK`` is a trainer (``iocane``, ``plain``, ``art``, ``textbook``) or ``peak``;
``SUBNORMALS`` is ``flush`` or ``ieee``. The subnormal mode and the thread count are set first
thing, and torch's worker threads are started right after under that mode, so every trainer
runs under the same ones whatever it does later (a mode set after the pool started reaches only
the calling thread: ``iocane.training.hardware``). The job directory holds the prepared data
(iocane's own ``prepare_data``), the initial weights and ``job.json`` (the config overrides, the
batches of the warmup). A trainer first trains on ``warmup_batches`` batches, untimed (lazy
initialisation, kernel selection, the allocator), then times one whole epoch from the initial
weights. The result is one JSON line on stdout.
"""

from __future__ import annotations

import sys

import torch


def fix_process_mode(threads: int, subnormals: str) -> None:
    """The same subnormal mode and threads for every trainer, set before any thread starts."""
    torch.set_flush_denormal(subnormals == "flush")
    torch.set_num_threads(threads)
    # Start the thread pools in this mode: an elementwise op (ATen's) and a matrix product.
    torch.ones(1 << 22) * 1.0
    torch.ones(512, 512) @ torch.ones(512, 512)


# Before the imports below: nothing may start a thread before the mode is set.
if __name__ == "__main__":
    fix_process_mode(int(sys.argv[3]), sys.argv[4])

import dataclasses  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from attacks import PGD  # noqa: E402
from iocane.base.config import Config, load_config, replace  # noqa: E402
from iocane.base.layout import Layout  # noqa: E402
from iocane.data.prepared import PreparedData, Split, load_prepared  # noqa: E402
from iocane.training.hardware import resolve_hardware  # noqa: E402
from iocane.training.loop import fit  # noqa: E402
from iocane.training.recipes import Recipe  # noqa: E402
from models import build_model  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VALIDATION_IMAGES = 256  # iocane's epoch ends in a clean validation pass on this many
DEVICE = torch.device("cpu")


def plain_pgd(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, alpha: float, k: int
) -> torch.Tensor:
    """Linf PGD as an engineer writes it: uniform start, ``torch.autograd.grad`` for the input's
    gradient only (``loss.backward()`` would also compute every weight's, unused), signed
    steps, clipped to the ball and to [0, 1]."""
    delta = torch.empty_like(images).uniform_(-eps, eps)
    delta = ((images + delta).clamp(0, 1) - images).requires_grad_(True)
    for _ in range(k):
        loss = F.cross_entropy(model(images + delta), labels)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
        delta = ((images + delta).clamp(0, 1) - images).detach().requires_grad_(True)
    return (images + delta).detach()


def textbook_pgd(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, alpha: float, k: int
) -> torch.Tensor:
    """PGD as the tutorials print it (Madry and Kolter's): ``loss.backward()`` for the attack's
    gradient, which computes every weight's gradient too, and ``delta.data`` updates."""
    delta = torch.empty_like(images).uniform_(-eps, eps)
    delta = ((images + delta).clamp(0, 1) - images).requires_grad_(True)
    for _ in range(k):
        loss = F.cross_entropy(model(images + delta), labels)
        loss.backward()
        delta.data = (delta + alpha * delta.grad.detach().sign()).clamp(-eps, eps)
        delta.data = (images + delta.data).clamp(0, 1) - images
        delta.grad.zero_()
    return (images + delta).detach()


def plain_epoch(
    model: nn.Module, data: PreparedData, config: Config, attack: Callable = plain_pgd
) -> None:
    """The obvious loop: a shuffling DataLoader, the attack, the loss, one SGD step."""
    train = config.train
    optimizer = torch.optim.SGD(
        model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
    )
    dataset = TensorDataset(data.train.images, data.train.labels)
    model.train()
    for images, labels in DataLoader(dataset, batch_size=train.batch_size, shuffle=True):
        adversarial = attack(model, images, labels, train.eps, train.step_size, train.steps)
        loss = F.cross_entropy(model(adversarial), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def iocane_epoch(model: nn.Module, data: PreparedData, config: Config) -> None:
    """``iocane.training.loop.fit`` for one epoch, as the train stage calls it: its clean
    validation pass and its atomic checkpoint included."""
    train = config.train
    spec = data.model_spec(config.model)
    with tempfile.TemporaryDirectory() as directory:
        fit(
            stage="train",
            model=model,
            spec=spec,
            data=data,
            optim=replace(train, epochs=1),
            recipe=Recipe.from_config(train),
            val_attack=None,
            layout=Layout(Path(directory)),
            seed=0,
            run_key="throughput",
            device=DEVICE,
            hardware=resolve_hardware(DEVICE, config.runtime),
        )


def art_epoch(model: nn.Module, data: PreparedData, config: Config) -> None:
    """IBM ART's ``AdversarialTrainerMadryPGD`` on numpy arrays, as its examples run it."""
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
        input_shape=tuple(data.train.image_shape),
        nb_classes=data.model_spec(config.model).num_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
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


TRAINERS: dict[str, Callable[[nn.Module, PreparedData, Config], None]] = {
    "iocane": iocane_epoch,
    "plain": plain_epoch,
    "art": art_epoch,
    # Not in the default run: the plain loop with the tutorials' attack (its extra weight
    # gradients are the plain loop's own cost, not a fair yardstick).
    "textbook": lambda model, data, config: plain_epoch(model, data, config, textbook_pgd),
}


def load_job(job_dir: Path) -> tuple[dict, Config, PreparedData, dict]:
    """The job's settings, config, prepared data (validation cut to 256 images) and weights."""
    job = json.loads((job_dir / "job.json").read_text())
    config = load_config(PROJECT_ROOT / "params.yaml", job["overrides"])
    data = load_prepared(Layout(job_dir))
    val = data.val.subset(torch.arange(min(VALIDATION_IMAGES, len(data.val))))
    data = dataclasses.replace(data, val=val)
    return job, config, data, torch.load(job_dir / "initial.pt", weights_only=True)


def fresh_model(data: PreparedData, config: Config, initial: dict) -> nn.Module:
    model = build_model(data.model_spec(config.model))
    model.load_state_dict(initial)
    return model


def pgd_accuracy(model: nn.Module, split: Split, config: Config) -> float:
    """A sanity figure: the trainer produced a model, not just spent the time."""
    model.eval()
    attack = PGD(eps=config.train.eps, steps=config.train.steps, seed=1)
    adversarial = attack(model, split.images, split.labels)
    with torch.no_grad():
        return (model(adversarial).argmax(1) == split.labels).float().mean().item()


def time_trainer(name: str, job_dir: Path) -> dict:
    """Warm up on a few batches, then time one epoch from the initial weights."""
    job, config, data, initial = load_job(job_dir)
    trainer = TRAINERS[name]
    few = job["warmup_batches"] * config.train.batch_size
    warm = dataclasses.replace(data, train=data.train.subset(torch.arange(few)))
    trainer(fresh_model(data, config, initial), warm, config)
    model = fresh_model(data, config, initial)
    torch.manual_seed(job["round_seed"])
    started = time.perf_counter()
    trainer(model, data, config)
    seconds = time.perf_counter() - started
    return {
        "trainer": name,
        "seconds": seconds,
        "images": len(data.train),
        "images_per_second": len(data.train) / seconds,
        "val_pgd_accuracy": pgd_accuracy(model, data.val, config),
        "subnormals_flushed_share_after": share_flushed(),
        "torch_threads": torch.get_num_threads(),
    }


def share_flushed() -> float:
    """The share of subnormal floats (1e-40 is one in float32) a parallel op flushes to zero
    now: 1.0 when every thread flushes, 0.0 when none does, between when only some do."""
    subnormals = torch.full((1 << 22,), 1e-40)
    return ((subnormals * 1.0) == 0).float().mean().item()


def main() -> None:
    job_dir, task = Path(sys.argv[1]), sys.argv[2]
    if task == "peak":
        from at_throughput_peak import flops_and_peaks

        job, config, data, initial = load_job(job_dir)
        result = flops_and_peaks(fresh_model(data, config, initial), data, config, job["quick"])
    elif task in TRAINERS:
        result = time_trainer(task, job_dir)
    else:
        raise SystemExit(f"unknown task {task!r}; known: peak, {', '.join(TRAINERS)}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
