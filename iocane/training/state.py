"""The train state: what a run needs to go on exactly where it stopped, to and from a checkpoint.

A checkpoint holds the model, the optimiser, the learning-rate schedule, the number of complete
epochs, every random state the loop draws from (the shuffle generator, torch's global generator,
CUDA's), the history of the epochs so far, a catastrophic-overfitting record and, for ``free``,
the perturbation that persists across batches, and, when it trains to a time budget, the
decision that set its epochs and the epochs it plans now (``iocane.training.budget``: a resumed
run keeps both). Restoring all
of it, in this order, is what makes a resumed run bit-identical to one that never stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from iocane.base.config import OptimConfig
from models import ModelSpec

CHECKPOINT_FORMAT = 1


# Adam's second-moment decay: PyTorch's (and Kingma & Ba's) default.
ADAM_BETA2 = 0.999


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """``optim.optimizer``: SGD with momentum; Adam with ``weight_decay`` as an L2 term in the
    gradient; AdamW with it decoupled (Loshchilov & Hutter). For the Adams, ``momentum`` is
    beta1 (0.9 in params.yaml, Adam's own default), so one key means the same thing in all three:
    how much of the last update carries over."""
    if optim.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=optim.lr,
            momentum=optim.momentum,
            weight_decay=optim.weight_decay,
        )
    adam = torch.optim.Adam if optim.optimizer == "adam" else torch.optim.AdamW
    return adam(
        model.parameters(),
        lr=optim.lr,
        betas=(optim.momentum, ADAM_BETA2),
        weight_decay=optim.weight_decay,
    )


# Schedules stepped after every batch rather than every epoch (``EpochLoop.run`` steps them).
PER_BATCH_SCHEDULES = ("onecycle",)
ONECYCLE_PEAK = 0.4  # Wong et al. 2020: the lr peaks at 2/5 of training


def steps_per_batch(optim: OptimConfig) -> bool:
    """Whether ``optim``'s schedule is stepped after every batch (else after every epoch)."""
    return optim.lr_schedule in PER_BATCH_SCHEDULES


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    optim: OptimConfig,
    *,
    batches_per_epoch: int = 1,
    last_epoch_steps: int | None = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. ``step`` divides by 10 at 50% and 75% of training (Madry, Rice).
    ``onecycle`` is stepped once per batch (``batches_per_epoch`` of them an epoch): Wong et
    al. 2020's cyclic schedule, the lr of the k-th step of n (1-based) is ``lr * tri(k / n)``,
    ``tri`` rising linearly from 0 to 1 at 2/5 and falling back to 0 at 1 (so the last step
    runs at lr 0, as in their code). A time budget's partial last epoch
    (``last_epoch_steps``) is one epoch to the per-epoch schedules and its steps to ``onecycle``:
    either way the schedule ends with its last step."""
    if optim.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=optim.epochs)
    if optim.lr_schedule == "step":
        milestones = [math.ceil(optim.epochs * 0.5), math.ceil(optim.epochs * 0.75)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if optim.lr_schedule == "onecycle":
        total = optim.epochs * batches_per_epoch
        if last_epoch_steps is not None:
            total -= batches_per_epoch - last_epoch_steps
        total = max(1, total)

        # A plain function: LambdaLR keeps it out of its state_dict (checkpoints hold no code).
        def one_cycle(step: int) -> float:
            fraction = min(1.0, (step + 1) / total)  # step counts the steps already taken
            if fraction <= ONECYCLE_PEAK:
                return fraction / ONECYCLE_PEAK
            return (1.0 - fraction) / (1.0 - ONECYCLE_PEAK)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def continued_scheduler(
    optimizer: torch.optim.Optimizer,
    optim: OptimConfig,
    *,
    batches_per_epoch: int,
    epochs_done: int,
    last_epoch_steps: int | None = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """``optim``'s schedule (a new length: a time budget changed the plan) as it stands after
    ``epochs_done`` whole epochs: made afresh from the initial lr and stepped there, so the
    optimiser's lr is the new schedule's for the next epoch."""
    for group in optimizer.param_groups:
        # The recursive forms (cosine, step) go on from the current lr: start them from the first.
        group["lr"] = group.get("initial_lr", group["lr"])
    scheduler = make_scheduler(
        optimizer, optim, batches_per_epoch=batches_per_epoch, last_epoch_steps=last_epoch_steps
    )
    per_epoch = batches_per_epoch if steps_per_batch(optim) else 1
    for _ in range(epochs_done * per_epoch):
        scheduler.step()
    return scheduler


@dataclass(eq=False)
class TrainState:
    """Everything of a run that changes as it trains. ``epoch`` counts the complete epochs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    shuffle: torch.Generator  # the order of the training images, epoch after epoch
    # free (Shafahi et al.): the perturbation persists across replays and minibatches
    free_delta: torch.Tensor
    device: torch.device
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    collapse: dict | None = None  # set once catastrophic overfitting stopped the run
    budget: dict | None = None  # the time-budget decision (BudgetDecision.to_dict()), if any

    @classmethod
    def start(
        cls,
        model: nn.Module,
        optim: OptimConfig,
        *,
        seed: int,
        free_delta_shape: tuple[int, ...],
        device: torch.device,
        batches_per_epoch: int = 1,
        last_epoch_steps: int | None = None,
    ) -> TrainState:
        """A run's state before its first step (no random state is drawn here);
        ``batches_per_epoch`` and a partial last epoch's ``last_epoch_steps`` size a per-batch
        schedule (``onecycle``)."""
        optimizer = make_optimizer(model, optim)
        scheduler = make_scheduler(
            optimizer,
            optim,
            batches_per_epoch=batches_per_epoch,
            last_epoch_steps=last_epoch_steps,
        )
        return cls(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            shuffle=torch.Generator().manual_seed(seed),
            free_delta=torch.zeros(free_delta_shape, device=device),
            device=device,
        )

    def to_checkpoint(
        self, *, stage: str, run_key: str, spec: ModelSpec, keep_free_delta: bool
    ) -> dict:
        """What a checkpoint holds after ``self.epoch`` complete epochs."""
        cuda = self.device.type == "cuda"
        budget = {"budget": self.budget} if self.budget is not None else {}
        return {
            "format": CHECKPOINT_FORMAT,
            "stage": stage,
            "run_key": run_key,
            "epoch": self.epoch,
            "spec": spec.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {
                "shuffle": self.shuffle.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
            },
            "history": self.history,
            "collapse": self.collapse,
            "free_delta": self.free_delta if keep_free_delta else None,
            **budget,
        }

    def restore(self, checkpoint: dict) -> None:
        """Put every part of a checkpoint back, random states included."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.shuffle.set_state(checkpoint["rng"]["shuffle"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if self.device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], self.device)
        self.history = list(checkpoint["history"])
        self.epoch = checkpoint["epoch"]
        self.collapse = checkpoint.get("collapse")
        self.budget = checkpoint.get("budget")
        if checkpoint.get("free_delta") is not None:
            self.free_delta = checkpoint["free_delta"].to(self.device)
