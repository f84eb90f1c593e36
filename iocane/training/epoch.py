"""One epoch of training: the batch loop, and the end of the epoch that turns its sums into a row
of the history.

``EpochLoop`` holds what every epoch of a run shares (the data, the recipe, the hardware, the
ranks, the passes a step backpropagates through); ``EpochProgress`` is where an epoch stands
(its image order, the next step, its running sums), which ``partial.pt`` keeps when a signal
stops the run between two steps. As MadryLab's ``train_model`` hands the batches to
``_model_loop``, the fit loop (``iocane.training.loop.fit``) hands each epoch to ``EpochLoop``.

Nothing in a step waits on the host: the sums and the first non-finite step stay device
tensors and are read once, at the end of the epoch.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from attacks import Attack
from iocane.base.config import OptimConfig
from iocane.base.errors import TrainingDiverged
from iocane.base.files import write_atomic
from iocane.base.layout import Layout
from iocane.data.prepared import Split
from iocane.training.chance import check_learning, judged_epoch
from iocane.training.checkpoints import kept_checkpoints
from iocane.training.hardware import Hardware
from iocane.training.passes import PassCount
from iocane.training.ranks import Ranks
from iocane.training.recipes import BatchStats, Recipe, TrainingPasses, train_step
from iocane.training.seeds import batch_seed
from iocane.training.state import TrainState, steps_per_batch
from iocane.training.validation import certified_figures, evaluate_shards
from models import ModelSpec

log = logging.getLogger("iocane")

PROGRESS_SECONDS = 30.0  # within a long epoch, a progress line at most this often
VALIDATION_BATCH = 512
# The epoch's running sums: the images trained, the clean cross-entropy summed over them and the
# images classified right, the same for their adversarial examples.
SUMS = ("images", "clean_loss_total", "clean_correct", "adv_loss_total", "adv_correct")
# The sums' names in a partial checkpoint written before they were named (``EpochProgress.resume``).
OLD_SUM_NAMES = dict(zip(("n", "cl", "cc", "al", "ac"), SUMS, strict=True))

# The columns of plots/<stage>.csv, one row per epoch.
HISTORY_COLUMNS = (
    "epoch",
    "lr",
    "eps",
    "train_clean_loss",
    "train_clean_accuracy",
    "train_adv_loss",
    "train_adv_accuracy",
    "val_clean_loss",
    "val_clean_accuracy",
    "val_adv_loss",
    "val_adv_accuracy",
    "seconds",
)
# Columns only some recipes' rows have, written only when a row does (other runs' files as before)
OPTIONAL_COLUMNS = ("val_certified_accuracy",)


def ramped_eps(eps: float, ramp_epochs: int, epoch: int, batch: int, n_batches: int) -> float:
    """eps for a batch (0-based epoch and batch) under a linear ramp from 0 over ramp_epochs."""
    if ramp_epochs <= 0:
        return eps
    progress = (epoch + (batch + 1) / n_batches) / ramp_epochs
    return eps * min(1.0, progress)


def batches_per_epoch(n_images: int, batch_size: int, ranks: Ranks) -> int:
    """Global batches in an epoch. Under DDP every rank needs at least two images of a batch;
    a shorter last batch is skipped."""
    if not ranks.distributed:
        return math.ceil(n_images / batch_size)
    return n_images // batch_size + (n_images % batch_size >= 2 * ranks.world_size)


def add_batch(sums: dict[str, torch.Tensor], images: int, stats: BatchStats) -> None:
    """A batch's figures added to the epoch's running sums (``SUMS``), on the device."""
    sums["images"] += images
    sums["clean_loss_total"] += stats.clean_loss
    sums["clean_correct"] += stats.clean_correct
    if stats.adv_loss is not None:
        sums["adv_loss_total"] += stats.adv_loss
        sums["adv_correct"] += stats.adv_correct


def step_passes(training_model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """The passes a step backpropagates through; under DDP the module that exchanges gradients
    (made after a resume: DDP hands rank 0's weights to every rank)."""
    passes = TrainingPasses(training_model)
    if not ranks.distributed:
        return passes
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(passes, device_ids=device_ids)


@dataclass(frozen=True)
class EpochProgress:
    """Where an epoch stands: its image order, the next step, the eps of the last step, the
    running sums and the first step whose loss was not finite (-1: none yet); under a per-batch
    schedule, the lr of the last step."""

    order: torch.Tensor
    batch: int
    eps: float
    sums: dict[str, torch.Tensor]
    first_nonfinite: torch.Tensor
    started: float  # perf_counter at the start of the epoch (of this process's part of it)
    stopped: str | None = None  # the signal that stopped the epoch after step ``batch``
    lr: float | None = None  # the lr of the last step (per-batch schedules only)

    @classmethod
    def begin(
        cls,
        n_images: int,
        shuffle: torch.Generator,
        device: torch.device,
        resume_from: dict | None = None,
    ) -> EpochProgress:
        """An epoch's start, or where a partial checkpoint's ``position`` stopped in it."""
        if resume_from is not None:
            return cls.resume(resume_from, device)
        return cls.start(n_images, shuffle, device)

    @classmethod
    def start(cls, n_images: int, shuffle: torch.Generator, device: torch.device) -> EpochProgress:
        """A new epoch: draws its order from the shuffle generator."""
        started = time.perf_counter()
        return cls(
            order=torch.randperm(n_images, generator=shuffle).to(device),
            batch=0,
            eps=0.0,
            sums={key: torch.zeros((), device=device) for key in SUMS},
            first_nonfinite=torch.full((), -1, dtype=torch.long, device=device),
            started=started,
        )

    @classmethod
    def resume(cls, position: dict, device: torch.device) -> EpochProgress:
        """The epoch a partial checkpoint stopped in: its order, sums and progress as they were."""
        return cls(
            order=position["order"].to(device),
            batch=position["batch"],
            eps=position["eps"],
            sums={
                OLD_SUM_NAMES.get(key, key): value.to(device)
                for key, value in position["sums"].items()
            },
            first_nonfinite=position["first_nonfinite"].to(device),
            started=time.perf_counter(),
            lr=position.get("lr"),
        )

    def position(self) -> dict:
        """What ``partial.pt`` keeps of a stopped epoch (``resume`` reads it back)."""
        return {
            "batch": self.batch,
            "order": self.order.cpu(),
            "eps": self.eps,
            "sums": {key: value.cpu() for key, value in self.sums.items()},
            "first_nonfinite": self.first_nonfinite.cpu(),
            "signal": self.stopped,
            **({"lr": self.lr} if self.lr is not None else {}),  # per-batch schedules only
        }


@dataclass(frozen=True)
class EpochTiming:
    """What an epoch took: all of it, its validation, and its steps (a time budget's replan
    reads it; it is not kept in checkpoints, the row's ``seconds`` is)."""

    seconds: float
    validation_seconds: float
    steps: int

    @property
    def step_seconds(self) -> float:
        return max(self.seconds - self.validation_seconds, 0.0) / max(self.steps, 1)


@dataclass(frozen=True)
class EpochLoop:
    """What every epoch of a run shares, and what its checkpoints say they belong to."""

    stage: str
    optim: OptimConfig
    train: Split  # on the device
    val: Split
    val_attack: Attack | None
    recipe: Recipe | None
    seed: int
    hardware: Hardware
    ranks: Ranks
    training_model: nn.Module  # the model the steps call (compiled, when asked for)
    device: torch.device
    layout: Layout
    spec: ModelSpec
    run_key: str
    # What a step backpropagates through (``step_passes``: DDP-wrapped under DDP). Under DDP it
    # is made after the resume, so the fit loop sets it then.
    passes: nn.Module | None = None
    # A time budget's partial last epoch (``iocane.training.budget``): its steps; None: whole.
    last_epoch_steps: int | None = None
    select: str = "last"  # which epoch becomes the model (``iocane.training.selection``)
    keep_checkpoints: str = "all"  # which epoch checkpoints stay (``iocane.training.checkpoints``)

    @property
    def epochs(self) -> int:
        return self.optim.epochs

    @property
    def batch_size(self) -> int:
        return self.optim.batch_size

    @property
    def directory(self) -> Path:
        """Where this stage's checkpoints live."""
        return self.layout.checkpoint_dir(self.stage)

    @property
    def n_batches(self) -> int:
        return batches_per_epoch(len(self.train), self.batch_size, self.ranks)

    def steps_in(self, epoch: int) -> int:
        """The steps of ``epoch`` (0-based): all its batches, fewer in a partial last epoch."""
        if self.last_epoch_steps is not None and epoch == self.epochs - 1:
            return self.last_epoch_steps
        return self.n_batches

    def checkpoint(self, state: TrainState) -> dict:
        """The checkpoint of the state as it is now."""
        keep_free_delta = self.recipe is not None and self.recipe.carries_perturbation
        checkpoint = state.to_checkpoint(
            stage=self.stage, run_key=self.run_key, spec=self.spec, keep_free_delta=keep_free_delta
        )
        if state.budget is not None:  # a time budget's plan now (``budget.replan``)
            checkpoint["planned_epochs"] = self.epochs
            checkpoint["planned_last_epoch_steps"] = self.last_epoch_steps
        return checkpoint

    def run(self, state: TrainState, epoch: int, progress: EpochProgress) -> EpochProgress:
        """The steps of an epoch from ``progress`` on, until its end or a stop that every rank
        agreed to; the sums come back added up over the ranks."""
        state.model.train()
        ranks, n_batches, sums = self.ranks, self.n_batches, progress.sums
        first_nonfinite, eps, stop = progress.first_nonfinite, progress.eps, None
        last_progress, batch, lr = progress.started, progress.batch, progress.lr
        per_batch = steps_per_batch(self.optim)
        for batch in range(progress.batch, self.steps_in(epoch)):
            size = self.batch_size
            global_batch = progress.order[batch * size : (batch + 1) * size]
            index = ranks.shard(global_batch)
            images, labels = self.hardware.batch(self.train.batch(index)), self.train.labels[index]
            if self.recipe is not None:
                eps = ramped_eps(
                    self.recipe.eps, self.recipe.eps_ramp_epochs, epoch, batch, n_batches
                )
            stats = train_step(
                self.training_model,
                state.optimizer,
                images,
                labels,
                recipe=self.recipe,
                eps=eps,
                seed=batch_seed(self.seed, epoch, batch, ranks.rank),  # each rank its own starts
                batch=batch,
                free_delta=state.free_delta,
                autocast=self.hardware.autocast,
                passes=self.passes,
                weight=len(index) * ranks.world_size / len(global_batch),
            )
            if per_batch:  # onecycle: the schedule moves every step (the others, every epoch)
                lr = state.optimizer.param_groups[0]["lr"]
                state.scheduler.step()
            nonfinite = ~torch.isfinite(stats.objective) & (first_nonfinite < 0)
            first_nonfinite = torch.where(nonfinite, batch, first_nonfinite)
            add_batch(sums, len(labels), stats)
            stop = ranks.agreed_stop(self.device)
            if stop:
                break
            if time.perf_counter() - last_progress > PROGRESS_SECONDS:
                last_progress = time.perf_counter()
                self._log_progress(epoch, batch, progress.started)
        return replace(
            progress,
            batch=batch + 1 if stop else self.steps_in(epoch),
            eps=eps,
            sums=ranks.sum(sums),
            first_nonfinite=ranks.first_step(first_nonfinite),
            stopped=stop,
            lr=lr,
        )

    def end(
        self, state: TrainState, epoch: int, progress: EpochProgress, counter: PassCount
    ) -> tuple[dict, EpochTiming]:
        """The end of a complete epoch: the divergence check, the schedule's step (a per-batch
        schedule has stepped already: the row's lr is its last step's), validation, the epoch's
        row of the history, and (once) the check that the run is learning at all; with the row,
        what the epoch took."""
        check_finite(self.stage, epoch, progress.first_nonfinite, state.model, self.directory)
        if steps_per_batch(self.optim):
            lr = progress.lr if progress.lr is not None else state.optimizer.param_groups[0]["lr"]
        else:
            lr = state.optimizer.param_groups[0]["lr"]
            state.scheduler.step()
        validation_started = time.perf_counter()
        with counter.section("validation"):
            val_figures = evaluate_shards(
                state.model, self.val, self.val_attack, VALIDATION_BATCH, self.ranks
            ) | certified_figures(state.model, self.val, self.recipe, VALIDATION_BATCH, self.ranks)
        validation_seconds = time.perf_counter() - validation_started
        sums = progress.sums
        trained = sums["images"].item()  # under DDP, a skipped short last batch is not counted
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "eps": progress.eps,
            "train_clean_loss": sums["clean_loss_total"].item() / trained,
            "train_clean_accuracy": sums["clean_correct"].item() / trained,
            **{f"val_{key}": value for key, value in val_figures.items()},
            "seconds": time.perf_counter() - progress.started,
        }
        if self.recipe is not None:
            row["train_adv_loss"] = sums["adv_loss_total"].item() / trained
            row["train_adv_accuracy"] = sums["adv_correct"].item() / trained
        if epoch == judged_epoch(self.n_batches, self.epochs):  # before it is checkpointed
            check_learning(
                stage=self.stage,
                epoch=epoch,
                row=row,
                images_trained=trained,
                train_labels=self.train.labels,
                val_labels=self.val.labels,
                num_classes=self.spec.num_classes,
                lr=self.optim.lr,
                eps=self.recipe.eps if self.recipe is not None else None,
            )
        timing = EpochTiming(row["seconds"], validation_seconds, self.steps_in(epoch))
        return row, timing

    def _log_progress(self, epoch: int, batch: int, epoch_started: float) -> None:
        elapsed = time.perf_counter() - epoch_started
        n_batches = self.steps_in(epoch)
        remaining = elapsed / (batch + 1) * (n_batches - batch - 1)
        log.info(
            "%s epoch %d/%d  batch %d/%d (%.0f%%)  %.1fs elapsed, about %.0fs left in this epoch",
            self.stage,
            epoch + 1,
            self.epochs,
            batch + 1,
            n_batches,
            100 * (batch + 1) / n_batches,
            elapsed,
            remaining,
        )


def check_finite(
    stage: str, epoch: int, first_nonfinite: torch.Tensor, model: nn.Module, directory: Path
) -> None:
    """Stop before this epoch is checkpointed if its loss or weights stopped being finite; the
    checkpoints of the epochs before it stay, and nothing downstream runs."""
    step = int(first_nonfinite)
    weights_finite = bool(torch.stack([p.isfinite().all() for p in model.parameters()]).all())
    if step < 0 and weights_finite:
        return
    where = f"at epoch {epoch + 1}, step {step + 1}" if step >= 0 else f"during epoch {epoch + 1}"
    kept = kept_checkpoints(directory)
    raise TrainingDiverged(
        f"{stage}: training diverged: the {'loss' if step >= 0 else 'weights'} became "
        f"non-finite {where}. Lower {stage}.lr (or train.eps); "
        + (f"the last good checkpoint, {kept[-1].name}, is kept" if kept else "no epoch was kept")
    )


def write_history(path: Path, rows: list[dict]) -> None:
    """The history as a CSV file (``HISTORY_COLUMNS``), written atomically."""
    columns = HISTORY_COLUMNS + tuple(
        column for column in OPTIONAL_COLUMNS if any(column in row for row in rows)
    )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in columns})
    write_atomic(path, lambda stream: stream.write(buffer.getvalue().encode()))
