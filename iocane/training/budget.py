"""Training to a time budget (``train.budget_minutes``): how many epochs fill it on this machine.

With a budget, the ``train`` stage first calibrates what one epoch costs here: on a copy of the
model (its own optimiser, its own perturbation for ``free``, the random states forked and put
back), it runs ``WARMUP_STEPS`` untimed steps and ``TIMED_STEPS`` timed ones of the real recipe
(same batch size, model, precision, compilation and, under DDP, the same gradient exchange;
``free``'s replays are part of a step), and times the per-epoch validation attack on one batch of
the validation split. An epoch then costs ``steps x batches per epoch + validation``; the epochs
that fill the budget are

    max(1, floor((budget - calibration - one-off cost) / (epoch x (1 + MARGIN))))

where the calibration's own time and the one-off cost the real run pays again (the first step's
extra time: compilation, lazy initialisation) are spent from the budget first. The lr schedule's
length and an eps ramp longer than that follow the decided epochs: training to a budget is
training with ``train.epochs`` set to the decided number, step for step.

The budget is a limit, not only a plan: a machine that slows down after calibrating (a shared
host, thermal throttling) must not turn ten minutes into fifteen, nor end a run halfway down its
lr schedule. After each epoch, ``replan`` counts the epochs, each as long as that one, that still
fit in what is left (the calibration and the epochs' own seconds, from the history); when they are
fewer than planned, the plan shrinks to them and the lr schedule (and an eps ramp longer than the
plan) is rebuilt over the shorter length from where training stands, so the last epoch trained
still ends the schedule. When none fits, training stops there, says so, and the selection picks
from the epochs trained (the metrics record ``budget_stopped_after_epoch``). The plan is kept in
every checkpoint, so a resumed run goes on with it.

The decision is stored in every checkpoint, so a resumed run keeps it (and never recalibrates);
under DDP every rank measures, the slowest rank's figures are agreed, and every rank computes the
same decision from them. The budget is the training time of the ``train`` stage (calibration,
steps, per-epoch validation and checkpoints); loading data, the warmup and evaluation are not in
it.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass, replace
from time import perf_counter

import torch
import torch.distributed as dist
from torch import nn

from iocane.config import OptimConfig
from iocane.training.epoch import VALIDATION_BATCH, EpochLoop, step_passes
from iocane.training.recipes import AdversarialRecipe, train_step
from iocane.training.state import make_optimizer
from iocane.training.validation import evaluate_shards

log = logging.getLogger("iocane")

WARMUP_STEPS = 2  # untimed: the first steps pay for allocation, kernel choice, compilation
TIMED_STEPS = 5
MARGIN = 0.10  # per epoch: checkpoints, the history file, timing noise


@dataclass(frozen=True)
class EpochCost:
    """What calibration measured: seconds per step, per epoch's validation, the extra time of
    the first step (paid again by the real run) and the calibration itself."""

    step_seconds: float
    validation_seconds: float
    first_step_extra_seconds: float
    calibration_seconds: float


@dataclass(frozen=True)
class BudgetDecision:
    """The epochs a budget buys, and the measurement that decided it (kept in checkpoints)."""

    budget_minutes: float
    epochs: int
    epoch_seconds: float  # one calibrated epoch, before the margin
    step_seconds: float
    batches_per_epoch: int
    validation_seconds: float
    calibration_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> BudgetDecision:
        return cls(**record)

    def metrics(self) -> dict:
        """What ``metrics/train.json`` records of the decision."""
        return {
            "budget_minutes": self.budget_minutes,
            "budget_epochs": self.epochs,
            "calibrated_epoch_seconds": self.epoch_seconds,
            "calibration_seconds": self.calibration_seconds,
        }

    def describe(self, stage: str) -> str:
        return (
            f"{stage}: budget {self.budget_minutes:g} min: one epoch calibrated at "
            f"{self.epoch_seconds:.1f}s ({self.batches_per_epoch} steps of "
            f"{self.step_seconds:.3f}s + validation {self.validation_seconds:.1f}s; "
            f"+{MARGIN:.0%} margin), calibration {self.calibration_seconds:.1f}s: "
            f"training {self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        )


def with_epochs(
    epochs: int, optim: OptimConfig, recipe: AdversarialRecipe | None
) -> tuple[OptimConfig, AdversarialRecipe | None]:
    """``optim`` with ``epochs`` (the lr schedule's length) and ``recipe`` with an eps ramp no
    longer than them: training for a budget's epochs is training with ``train.epochs`` set."""
    optim = optim.model_copy(update={"epochs": epochs})
    if recipe is None or recipe.eps_ramp_epochs <= epochs:
        return optim, recipe
    return optim, replace(recipe, eps_ramp_epochs=epochs)


def plan_epochs(budget_minutes: float, epoch_seconds: float, spent_seconds: float) -> int:
    """The epochs (at least 1) of ``epoch_seconds`` each, plus the margin, that fit in what is
    left of the budget once ``spent_seconds`` are spent."""
    left = budget_minutes * 60 - spent_seconds
    return max(1, math.floor(left / (epoch_seconds * (1 + MARGIN))))


def decide(budget_minutes: float, cost: EpochCost, batches_per_epoch: int) -> BudgetDecision:
    """The decision a measured epoch cost makes (pure arithmetic: every rank gets the same)."""
    epoch_seconds = cost.step_seconds * batches_per_epoch + cost.validation_seconds
    spent = cost.calibration_seconds + cost.first_step_extra_seconds
    return BudgetDecision(
        budget_minutes=budget_minutes,
        epochs=plan_epochs(budget_minutes, epoch_seconds, spent),
        epoch_seconds=epoch_seconds,
        step_seconds=cost.step_seconds,
        batches_per_epoch=batches_per_epoch,
        validation_seconds=cost.validation_seconds,
        calibration_seconds=cost.calibration_seconds,
    )


def spent_seconds(decision: BudgetDecision, history: list[dict]) -> float:
    """The budget spent so far: the calibration and the epochs of ``history``."""
    return decision.calibration_seconds + sum(row["seconds"] for row in history)


def replan(decision: BudgetDecision, planned: int, history: list[dict]) -> int:
    """The epochs to train, after the epochs of ``history``: ``planned``, or fewer when fewer
    epochs as long as the last one fit in what is left of the budget (never more: a machine
    that speeds up again does not lengthen a schedule already shortened)."""
    if not history:
        return planned
    left = decision.budget_minutes * 60 - spent_seconds(decision, history)
    fit = max(0, math.floor(left / max(history[-1]["seconds"], 1e-9)))
    return min(planned, len(history) + fit)


def settle_budget(
    budget_minutes: float, loop: EpochLoop, model: nn.Module, resumed: dict | None
) -> BudgetDecision:
    """The decision of this run: the one its checkpoint holds when it resumes, else a new
    calibration on a copy of ``model`` (agreed over the ranks); logged either way."""
    record = resumed.get("budget") if resumed is not None else None
    if record is not None:
        decision = BudgetDecision.from_dict(record)
        log.info("%s (decided when this run started)", decision.describe(loop.stage))
        return decision
    decision = decide(budget_minutes, _agreed(measure_epoch(loop, model), loop), loop.n_batches)
    log.info("%s", decision.describe(loop.stage))
    return decision


def _agreed(cost: EpochCost, loop: EpochLoop) -> EpochCost:
    """Under DDP, each figure's largest value over the ranks: the slowest rank sets the pace."""
    if not loop.ranks.distributed:
        return cost
    figures = torch.tensor(list(asdict(cost).values()), dtype=torch.float64, device=loop.device)
    dist.all_reduce(figures, op=dist.ReduceOp.MAX)
    return EpochCost(*figures.tolist())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_epoch(loop: EpochLoop, model: nn.Module) -> EpochCost:
    """Time real training steps and the validation of one batch on a copy of ``model``; the
    model, its optimiser and every random state training then draws from are left as they were
    (the copy has its own optimiser and perturbation, and the global random states are forked)."""
    started = perf_counter()
    device = loop.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        twin = copy.deepcopy(model)
        training_twin = loop.hardware.training_model(twin)
        passes = step_passes(training_twin, loop.ranks, device)
        optimizer = make_optimizer(twin, loop.optim)
        size = min(loop.batch_size, len(loop.train))
        shard = loop.ranks.shard(torch.arange(size))
        free_delta = torch.zeros((len(shard), *loop.train.image_shape), device=device)
        twin.train()
        times = []
        for step in range(WARMUP_STEPS + TIMED_STEPS):
            # Full batches in a fixed order (no draw from the shuffle generator).
            index = (torch.arange(size) + step * size) % len(loop.train)
            index = loop.ranks.shard(index).to(device)
            _synchronize(device)
            begun = perf_counter()
            train_step(
                training_twin,
                optimizer,
                loop.hardware.batch(loop.train.batch(index)),
                loop.train.labels[index],
                recipe=loop.recipe,
                eps=loop.recipe.eps if loop.recipe is not None else 0.0,
                seed=loop.seed + step,
                batch=step,
                free_delta=free_delta,
                autocast=loop.hardware.autocast,
                passes=passes,
                weight=float(len(index) * loop.ranks.world_size) / size,
            )
            _synchronize(device)
            times.append(perf_counter() - begun)
        validation = _validation_seconds(loop, twin)
    step_seconds = sum(times[WARMUP_STEPS:]) / TIMED_STEPS
    return EpochCost(
        step_seconds=step_seconds,
        validation_seconds=validation,
        first_step_extra_seconds=max(0.0, times[0] - step_seconds),
        calibration_seconds=perf_counter() - started,
    )


def _validation_seconds(loop: EpochLoop, twin: nn.Module) -> float:
    """One epoch's validation, timed on its first batch and scaled to the split."""
    if len(loop.val) == 0:
        return 0.0
    part = min(VALIDATION_BATCH, len(loop.val))
    subset = loop.val.subset(torch.arange(part, device=loop.val.labels.device))
    _synchronize(loop.device)
    begun = perf_counter()
    evaluate_shards(twin, subset, loop.val_attack, VALIDATION_BATCH, loop.ranks)
    _synchronize(loop.device)
    return (perf_counter() - begun) * len(loop.val) / part
