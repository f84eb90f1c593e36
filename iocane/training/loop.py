"""Natural warmup and PGD adversarial training: one training loop for both stages.

The ``warmup`` stage trains on clean images only (adversarial examples against an untrained
model are noise: a curriculum) and is the natural baseline the gate compares against. The
``train`` stage continues from its weights with adversarial training by the recipe
``train.method`` names (``recipes``; PGD, Madry et al. 2018, by default) and an optional linear
eps ramp. Every epoch ends in a checkpoint holding model, optimiser, scheduler, epoch
and RNG states, written atomically, so a run can resume where it stopped.

Batch norm: the attack runs with the model in eval mode, so crafting adversarial examples never
updates running statistics and the attacker sees the same function the evaluator does; the
weight update then runs in train mode on the adversarial batch.

``fit`` is the epoch loop: it resumes the train state (``state``) from the checkpoint files
(``checkpoints``), hands each epoch to the batch loop (``epoch``), checkpoints the epoch, and at
the end writes the selected weights (``selection``). Under DDP (``ranks``) every process runs it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from attacks import Attack
from iocane.base.config import Config, OptimConfig
from iocane.base.files import sha256_file
from iocane.base.interrupts import Interrupted, safe_stop_section
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData, load_prepared
from iocane.model_files import load_model
from iocane.training.budget import (
    BudgetDecision,
    Plan,
    replan,
    settle_budget,
    spent_seconds,
    with_epochs,
)
from iocane.training.checkpoints import (
    prune_checkpoints,
    run_key,
    run_params,
    save_epoch,
)
from iocane.training.epoch import (
    EpochLoop,
    EpochProgress,
    EpochTiming,
    step_passes,
    write_history,
)
from iocane.training.finish import finish_run
from iocane.training.hardware import Hardware, resolve_hardware, subnormals_flushed
from iocane.training.passes import counting_passes
from iocane.training.ranks import Ranks
from iocane.training.recipes import Recipe
from iocane.training.resume import (
    restore_state,
    stopped_within_epoch,
    take_resumable_checkpoint,
)
from iocane.training.seeds import stage_seed
from iocane.training.selection import (
    collapse_record,
    epochs_read,
)
from iocane.training.state import TrainState, continued_scheduler
from iocane.training.validation import validation_attack
from models import ModelSpec

log = logging.getLogger("iocane")


@dataclass(frozen=True)
class ModelRef:
    """What flows between tasks: the weights file and its sha256."""

    path: str
    sha256: str


@subnormals_flushed()  # a confident network's gradients: see iocane.training.hardware
def fit(
    *,
    stage: str,
    model: nn.Module,
    spec: ModelSpec,
    data: PreparedData,
    optim: OptimConfig,
    recipe: Recipe | None,
    val_attack: Attack | None,
    layout: Layout,
    seed: int,
    run_key: str,
    device: torch.device,
    select: str = "last",
    hardware: Hardware | None = None,
    ranks: Ranks | None = None,
    budget_minutes: float = 0.0,
    keep_checkpoints: str = "all",
) -> dict:
    """Train for ``optim.epochs``, checkpointing every epoch, and write the selected epoch's
    weights as the stage's model (``select``: ``best`` validation PGD accuracy, or ``last``);
    stop early, on the last good weights, when adversarial training collapses, and with
    ``NotLearning`` when clean accuracy stays at chance (``chance``). ``hardware``
    (default: float32, eager) says how the steps run; ``ranks`` (default: one process) places
    this process under DDP: it trains on its shard of each global batch, only rank 0 writes.
    ``budget_minutes`` > 0 trains the epochs that fill that many minutes instead (``budget``).
    ``keep_checkpoints`` (``checkpoints``): ``all`` epochs stay, or ``newest_and_best``."""
    started = time.perf_counter()
    ranks = ranks or Ranks()
    hardware = hardware or Hardware(device=device, bf16=False, channels_last=False, compile=False)
    hardware.place_model(model)
    training_model = hardware.training_model(model)
    epochs = EpochLoop(
        stage=stage,
        optim=optim,
        train=data.train.to(device),
        val=data.val.to(device),
        val_attack=val_attack,
        recipe=recipe,
        seed=seed,
        hardware=hardware,
        ranks=ranks,
        training_model=training_model,
        device=device,
        layout=layout,
        spec=spec,
        run_key=run_key,
        select=select,
        keep_checkpoints=keep_checkpoints,
    )
    epochs, state, resumed = _start_state(epochs, model, budget_minutes)
    # After the resume: under DDP, making the passes hands rank 0's weights to every rank.
    epochs = replace(epochs, passes=step_passes(training_model, ranks, device))
    position = resumed.get("position") if resumed is not None else None
    images_trained = 0  # by this process's run (a resumed run counts from the resume)
    # SIGINT/SIGTERM within the loop: finish the step, save exactly this point, stop.
    with safe_stop_section(), counting_passes(model, "training") as passes_made:
        epoch = state.epoch if state.collapse is None else epochs.epochs
        while epoch < epochs.epochs:  # a time budget may shorten the plan as it goes
            progress = EpochProgress.begin(len(epochs.train), state.shuffle, device, position)
            position = None
            progress = epochs.run(state, epoch, progress)
            if progress.stopped:
                raise stopped_within_epoch(epochs, state, epoch, progress)
            row, timing = epochs.end(state, epoch, progress, passes_made)
            images_trained += int(progress.sums["images"].item())
            epochs = _close_epoch(epochs, state, epoch, row, timing)
            if state.collapse is not None:
                break
            epoch += 1
    return finish_run(
        epochs,
        state,
        select=select,
        resumed=resumed,
        started=started,
        images_trained=images_trained,
        counter=passes_made,
    )


def _start_state(
    epochs: EpochLoop, model: nn.Module, budget_minutes: float
) -> tuple[EpochLoop, TrainState, dict | None]:
    """The run's state before its next step: new, or resumed from this run's newest checkpoint;
    with a time budget, the epochs it plans (and the state keeps its decision)."""
    epochs.directory.mkdir(parents=True, exist_ok=True)
    resumed = take_resumable_checkpoint(epochs)
    epochs, budget = _to_budget(epochs, model, resumed, budget_minutes)
    world_size = epochs.ranks.world_size
    shard = (math.ceil(epochs.batch_size / world_size), *epochs.train.image_shape)
    state = TrainState.start(
        model,
        epochs.optim,
        seed=epochs.seed,
        free_delta_shape=shard,
        device=epochs.device,
        batches_per_epoch=epochs.n_batches,
        last_epoch_steps=epochs.last_epoch_steps,
    )
    restore_state(state, epochs, resumed)
    if budget is not None:
        state.budget = budget.to_dict()
    return epochs, state, resumed


def _to_budget(
    epochs: EpochLoop, model: nn.Module, resumed: dict | None, budget_minutes: float
) -> tuple[EpochLoop, BudgetDecision | None]:
    """With a time budget, the epochs (the schedule's length, a longer eps ramp, a partial last
    epoch) it plans: those decided, or those a resumed run's checkpoint planned last; settled
    before the state is made, so the run is the run with that plan set."""
    if budget_minutes <= 0:
        return epochs, None
    budget = settle_budget(budget_minutes, epochs, model, resumed)
    plan = budget.plan
    if resumed is not None:
        if resumed.get("planned_epochs"):
            plan = Plan(resumed["planned_epochs"], resumed.get("planned_last_epoch_steps"))
        else:  # a checkpoint written before plans were kept: the plan its history makes
            plan = replan(budget, plan, resumed["history"])
    return _planned(epochs, plan), budget


def _planned(epochs: EpochLoop, plan: Plan) -> EpochLoop:
    optim, recipe = with_epochs(plan.epochs, epochs.optim, epochs.recipe, plan.last_epoch_steps)
    return replace(epochs, optim=optim, recipe=recipe, last_epoch_steps=plan.last_epoch_steps)


def _follow_budget(epochs: EpochLoop, state: TrainState, timing: EpochTiming) -> EpochLoop:
    """With a budget, after an epoch: when the plan no longer fits in what is left at this
    epoch's pace (the machine runs slower than calibrated), or more fits even after the margin
    (it runs faster), the plan becomes what fits (every rank the shortest: each times its own
    epochs) and the lr schedule is rebuilt over it from here, so the last step trained still
    ends the schedule; nothing left stops training."""
    if state.budget is None or state.collapse is not None:
        return epochs
    decision = BudgetDecision.from_dict(state.budget)
    current = Plan(epochs.epochs, epochs.last_epoch_steps)
    plan = replan(decision, current, state.history, timing)
    n_batches = epochs.n_batches
    plan = Plan.from_steps(epochs.ranks.smallest(plan.steps(n_batches), epochs.device), n_batches)
    if plan == current:
        return epochs
    planned = _planned(epochs, plan)
    if plan.epochs > state.epoch:  # epochs left to train: the schedule over the new plan
        state.scheduler = continued_scheduler(
            state.optimizer,
            planned.optim,
            batches_per_epoch=n_batches,
            epochs_done=state.epoch,
            last_epoch_steps=plan.last_epoch_steps,
        )
    steps, now = current.steps(n_batches), plan.steps(n_batches)
    if plan.epochs <= state.epoch:
        next_step = f"stopping after epoch {state.epoch}"
    else:
        rebuilt = "lengthened" if now > steps else "shortened"
        next_step = f"{plan.describe()} instead of {current.describe()}, the lr schedule {rebuilt}"
    # Slower is a warning (the budget was at risk); faster only news.
    log.log(
        logging.INFO if now > steps else logging.WARNING,
        "%s: budget %g min: %s: %.0fs spent and the last epoch took %.1fs (calibrated at "
        "%.1fs): this machine ran %s than calibrated",
        epochs.stage,
        decision.budget_minutes,
        next_step,
        spent_seconds(decision, state.history),
        state.history[-1]["seconds"],
        decision.epoch_seconds,
        "faster" if now > steps else "slower",
    )
    return planned


def _close_epoch(
    epochs: EpochLoop, state: TrainState, epoch: int, row: dict, timing: EpochTiming
) -> EpochLoop:
    """The end of a complete epoch: its row in the history, the collapse check, a time budget's
    new plan, its checkpoint and history file (rank 0), its log line; then a stop asked for
    during it stops the run. Returns the epochs as planned now."""
    stage = epochs.stage
    state.history.append(row)
    if epochs.recipe is not None:
        state.collapse = collapse_record(stage, state.history)
    state.epoch = epoch + 1
    epochs = _follow_budget(epochs, state, timing)
    if epochs.ranks.writes:
        save_epoch(epochs.directory, epochs.checkpoint(state))
        if epochs.keep_checkpoints != "all":  # only once the newest is written whole
            keep = epochs_read(state.history, epochs.select, state.collapse)
            prune_checkpoints(epochs.directory, keep)
        write_history(epochs.layout.history_file(stage), state.history)
    _log_epoch(stage, epochs.epochs, row)
    stop = epochs.ranks.agreed_stop(epochs.device)
    if stop:
        raise Interrupted(
            stop,
            f"{stage}: stopped by {stop} after epoch {epoch + 1} was saved; "
            "run the same command again to resume from there",
        )
    return epochs


def _log_epoch(stage: str, epochs: int, row: dict) -> None:
    certified = row.get("val_certified_accuracy")  # a certified recipe's (IBP at full eps)
    log.info(
        "%s epoch %d/%d  eps %.3f  lr %.4f | train clean %.3f adv %s | val clean %.3f "
        "adv %s" + ("" if certified is None else f" certified {certified:.3f}") + " | %.1fs",
        stage,
        row["epoch"],
        epochs,
        row["eps"],
        row["lr"],
        row["train_clean_accuracy"],
        _format_optional(row.get("train_adv_accuracy")),
        row["val_clean_accuracy"],
        _format_optional(row.get("val_adv_accuracy")),
        row["seconds"],
    )


def _format_optional(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def train_in_process(config: Config, layout: Layout, ranks: Ranks, device: torch.device) -> dict:
    """This process's part of the ``train`` stage (all of it when it is alone)."""
    hardware = resolve_hardware(device, config.runtime)
    data = load_prepared(layout)
    warmup_file = layout.model_file("warmup")
    model, spec = load_model(warmup_file, device)
    seed = stage_seed(config.seed, "train")
    torch.manual_seed(seed)
    train = config.train
    return fit(
        stage="train",
        model=model,
        spec=spec,
        data=data,
        optim=train,
        recipe=Recipe.from_config(train),
        val_attack=validation_attack(config),
        layout=layout,
        seed=seed,
        run_key=run_key(
            "train",
            run_params("train", config),
            data.meta["fingerprint"],
            sha256_file(warmup_file),
            hardware.describe(),
        ),
        device=device,
        select=train.select,
        hardware=hardware,
        ranks=ranks,
        budget_minutes=train.budget_minutes,
        keep_checkpoints=train.keep_checkpoints,
    )
