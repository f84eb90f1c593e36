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

A plan (``Plan``) is a number of epochs of which the last may be partial: what is left after the
whole epochs that fit, when it holds at least ``MIN_PARTIAL_EPOCH`` of an epoch's steps and their
validation, is trained as a last epoch of that many steps rather than left unused. A partial
epoch is an epoch like the others for everything but its length: it is validated, checkpointed
and a candidate for the selection, the lr schedule ends with its last step (a per-epoch schedule
counts it as one epoch, ``onecycle`` counts its steps) and its eps is the full eps (a ramp is cut
to the whole epochs).

The budget is a limit and a plan both ways: a machine that slows down after calibrating (a shared
host, thermal throttling) must not turn ten minutes into fifteen, nor end a run halfway down its
lr schedule, and one faster than calibrated (the calibration ran on a cold machine) must not
leave minutes unused. After each epoch, ``replan`` works out from that epoch's step and
validation seconds what still fits in what is left (the calibration and the epochs' own seconds,
from the history): when the plan no longer fits, it shrinks to what does; when more fits even
after the margin (at least ``MIN_PARTIAL_EPOCH`` of an epoch more, at the pace of the slower of
the last two epochs), it grows to that (between the two it stands, so timing noise does not move
it back and forth). Either way the lr schedule
(and an eps ramp longer than the plan) is rebuilt over the new plan from where training stands,
so the last step trained still ends the schedule. When nothing fits, training stops there, says
so, and the selection picks from the epochs trained (the metrics record
``budget_stopped_after_epoch`` when that is fewer epochs than decided). The plan is kept in every
checkpoint, so a resumed run goes on with it; once a partial epoch is trained, the plan is done.

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

from iocane.base.config import OptimConfig
from iocane.training.epoch import VALIDATION_BATCH, EpochLoop, EpochTiming, step_passes
from iocane.training.recipes import Recipe, train_step
from iocane.training.seeds import batch_seed
from iocane.training.state import make_optimizer
from iocane.training.validation import evaluate_shards

log = logging.getLogger("iocane")

# Untimed: the first steps pay once for what later steps reuse (the allocator's cache, thread
# pools, oneDNN's and cuDNN's kernel choice, compilation); timing them overstates every step.
WARMUP_STEPS = 2
TIMED_STEPS = 5
MARGIN = 0.10  # per epoch: checkpoints, the history file, timing noise
# In epochs: the smallest partial last epoch worth its validation, and the smallest growth
# worth rebuilding the schedule for.
MIN_PARTIAL_EPOCH = 0.2


def min_partial_steps(n_batches: int) -> int:
    return max(1, math.ceil(MIN_PARTIAL_EPOCH * n_batches))


@dataclass(frozen=True)
class EpochCost:
    """What calibration measured: seconds per step, per epoch's validation, the extra time of
    the first step (paid again by the real run) and the calibration itself."""

    step_seconds: float
    validation_seconds: float
    first_step_extra_seconds: float
    calibration_seconds: float


@dataclass(frozen=True)
class Plan:
    """The epochs to train; the last of them has ``last_epoch_steps`` steps when it is partial."""

    epochs: int
    last_epoch_steps: int | None = None

    @property
    def whole_epochs(self) -> int:
        return self.epochs - (self.last_epoch_steps is not None)

    def steps(self, batches_per_epoch: int) -> int:
        """The steps of the whole plan."""
        return self.whole_epochs * batches_per_epoch + (self.last_epoch_steps or 0)

    @classmethod
    def from_steps(cls, steps: int, batches_per_epoch: int) -> Plan:
        """The plan of ``steps`` steps: whole epochs, then the rest as a partial one."""
        whole, rest = divmod(steps, batches_per_epoch)
        return cls(whole + 1, rest) if rest else cls(whole)

    def describe(self) -> str:
        if self.last_epoch_steps is None:
            return f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        steps = self.last_epoch_steps
        return f"{self.epochs} epochs (the last of {steps} step{'s' if steps != 1 else ''})"


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
    # A partial last epoch (checkpoints written before there were any have none).
    last_epoch_steps: int | None = None

    @property
    def plan(self) -> Plan:
        return Plan(self.epochs, self.last_epoch_steps)

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
            f"training {self.plan.describe()}"
        )


def with_epochs(
    epochs: int,
    optim: OptimConfig,
    recipe: Recipe | None,
    last_epoch_steps: int | None = None,
) -> tuple[OptimConfig, Recipe | None]:
    """``optim`` with ``epochs`` (the lr schedule's length) and ``recipe`` with an eps ramp no
    longer than the whole epochs among them (a partial last epoch, of ``last_epoch_steps``,
    trains at the full eps): training for a budget's epochs is training with ``train.epochs``
    set."""
    optim = optim.model_copy(update={"epochs": epochs})
    whole = max(1, epochs - (last_epoch_steps is not None))
    if recipe is None or recipe.eps_ramp_epochs <= whole:
        return optim, recipe
    return optim, replace(recipe, eps_ramp_epochs=whole)


def plan_epochs(budget_minutes: float, epoch_seconds: float, spent_seconds: float) -> int:
    """The whole epochs (at least 1) of ``epoch_seconds`` each, plus the margin, that fit in
    what is left of the budget once ``spent_seconds`` are spent."""
    left = budget_minutes * 60 - spent_seconds
    return max(1, math.floor(left / (epoch_seconds * (1 + MARGIN))))


def fitting_plan(
    done: int, seconds: float, step_seconds: float, validation_seconds: float, n_batches: int
) -> Plan:
    """After ``done`` epochs, the plan that fills ``seconds``: the whole epochs that fit, then a
    partial epoch of the steps (and its validation) that fit in the rest, when they are at least
    ``MIN_PARTIAL_EPOCH`` of an epoch."""
    epoch_seconds = step_seconds * n_batches + validation_seconds
    # (a hair over the quotient, so that 50 s / 10 s is 5 epochs, not 4.999...)
    whole = math.floor(max(seconds, 0.0) / epoch_seconds + 1e-9) if epoch_seconds > 0 else 0
    rest = seconds - whole * epoch_seconds
    steps = math.floor((rest - validation_seconds) / step_seconds + 1e-9) if step_seconds > 0 else 0
    steps = min(steps, n_batches - 1)
    if steps < min_partial_steps(n_batches):
        return Plan(done + whole)
    return Plan(done + whole + 1, steps)


def decide(budget_minutes: float, cost: EpochCost, batches_per_epoch: int) -> BudgetDecision:
    """The decision a measured epoch cost makes (pure arithmetic: every rank gets the same): at
    least one whole epoch, and what fits after the margin."""
    epoch_seconds = cost.step_seconds * batches_per_epoch + cost.validation_seconds
    spent = cost.calibration_seconds + cost.first_step_extra_seconds
    left = (budget_minutes * 60 - spent) / (1 + MARGIN)
    plan = fitting_plan(0, left, cost.step_seconds, cost.validation_seconds, batches_per_epoch)
    if plan.whole_epochs < 1:  # at least one epoch, and it whole
        plan = Plan(1)
    return BudgetDecision(
        budget_minutes=budget_minutes,
        epochs=plan.epochs,
        epoch_seconds=epoch_seconds,
        step_seconds=cost.step_seconds,
        batches_per_epoch=batches_per_epoch,
        validation_seconds=cost.validation_seconds,
        calibration_seconds=cost.calibration_seconds,
        last_epoch_steps=plan.last_epoch_steps,
    )


def spent_seconds(decision: BudgetDecision, history: list[dict]) -> float:
    """The budget spent so far: the calibration and the epochs of ``history``."""
    return decision.calibration_seconds + sum(row["seconds"] for row in history)


def replan(
    decision: BudgetDecision,
    plan: Plan,
    history: list[dict],
    last: EpochTiming | None = None,
) -> Plan:
    """The plan after the epochs of ``history``, the last of which took ``last`` (default: its
    row's seconds, all of them steps): ``plan`` while it fits in what is left of the budget at
    the last epoch's pace and no more fits after the margin at the pace of the slower of the
    last two epochs; else the plan that fits (shorter when the machine runs slower, longer when
    it runs faster: on a shared host one quick epoch is not yet a faster machine). A plan whose
    partial last epoch is trained is done."""
    n_batches = decision.batches_per_epoch
    if not history or (plan.last_epoch_steps is not None and len(history) >= plan.epochs):
        return plan
    if last is None:
        last = EpochTiming(history[-1]["seconds"], 0.0, n_batches)
    left = decision.budget_minutes * 60 - spent_seconds(decision, history)
    step, validation = last.step_seconds, last.validation_seconds
    longest = fitting_plan(len(history), left, step, validation, n_batches)
    slower = max(last.seconds, history[-2]["seconds"]) if len(history) > 1 else last.seconds
    slower_step = replace(last, seconds=slower).step_seconds
    cautious = fitting_plan(len(history), left / (1 + MARGIN), slower_step, validation, n_batches)
    if plan.steps(n_batches) > longest.steps(n_batches):
        return longest
    if cautious.steps(n_batches) >= plan.steps(n_batches) + min_partial_steps(n_batches):
        return cautious
    return plan


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
                seed=batch_seed(loop.seed, 0, step, loop.ranks.rank),  # as the first epoch's
                batch=step,
                free_delta=free_delta,
                autocast=loop.hardware.autocast,
                passes=passes,
                weight=float(len(index) * loop.ranks.world_size) / size,
            )
            _synchronize(device)
            times.append(perf_counter() - begun)
        validation = _validation_seconds(loop, twin)  # after the steps: a warm machine
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
    # Untimed first: the attack's first call pays once for allocation and kernel choice, and
    # the timed batch is scaled to the whole split, which would multiply that one-off cost.
    evaluate_shards(twin, subset, loop.val_attack, VALIDATION_BATCH, loop.ranks)
    _synchronize(loop.device)
    begun = perf_counter()
    evaluate_shards(twin, subset, loop.val_attack, VALIDATION_BATCH, loop.ranks)
    _synchronize(loop.device)
    return (perf_counter() - begun) * len(loop.val) / part
