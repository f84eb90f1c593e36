"""Natural warmup and PGD adversarial training: one training loop for both stages.

The ``warmup`` stage trains on clean images only (adversarial examples against an untrained
model are noise: a curriculum) and is the natural baseline the gate compares against. The
``train`` stage continues from its weights with PGD adversarial training (Madry et al. 2018):
a loss mix ``(1 - adv_weight) * CE(clean) + adv_weight * CE(adversarial)`` and an optional
linear eps ramp. Every epoch ends in a checkpoint holding model, optimiser, scheduler, epoch
and RNG states, written atomically, so a run can resume where it stopped.

Batch norm: the attack runs with the model in eval mode, so crafting adversarial examples never
updates running statistics and the attacker sees the same function the evaluator does; the
weight update then runs in train mode on the adversarial batch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import attacks
import models
from attacks import PGD, Attack
from iocane.config import Config, OptimConfig
from iocane.data.prepared import PreparedData, Split, load_prepared
from iocane.errors import TrainingDiverged
from iocane.files import sha256_file, write_atomic, write_json
from iocane.interrupts import Interrupted, safe_stop_section
from iocane.layout import Layout
from iocane.modelio import load_model, save_model
from iocane.training.hardware import Hardware, resolve_hardware
from iocane.training.passes import counting_passes
from iocane.training.ranks import Ranks
from iocane.training.recipes import AdversarialRecipe, TrainingPasses, train_step
from models import ModelSpec

log = logging.getLogger("iocane")

PROGRESS_SECONDS = 30.0  # within a long epoch, a progress line at most this often

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


@dataclass(frozen=True)
class ModelRef:
    """What flows between tasks: the weights file and its sha256."""

    path: str
    sha256: str


def ramped_eps(eps: float, ramp_epochs: int, epoch: int, batch: int, n_batches: int) -> float:
    """eps for a batch (0-based epoch and batch) under a linear ramp from 0 over ramp_epochs."""
    if ramp_epochs <= 0:
        return eps
    progress = (epoch + (batch + 1) / n_batches) / ramp_epochs
    return eps * min(1.0, progress)


@torch.no_grad()
def _logits_in_batches(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def evaluate_split(
    model: nn.Module, split: Split, attack: Attack | None, batch_size: int
) -> dict[str, float]:
    """Clean (and, with an attack, adversarial) loss and accuracy of a model on a split."""
    model.eval()
    logits = _logits_in_batches(model, split.images, batch_size)
    figures = {
        "clean_loss": F.cross_entropy(logits, split.labels).item(),
        "clean_accuracy": (logits.argmax(1) == split.labels).float().mean().item(),
    }
    if attack is not None:
        adversarial = torch.cat(
            [
                attack(model, split.images[i : i + batch_size], split.labels[i : i + batch_size])
                for i in range(0, len(split), batch_size)
            ]
        )
        adv_logits = _logits_in_batches(model, adversarial, batch_size)
        figures["adv_loss"] = F.cross_entropy(adv_logits, split.labels).item()
        figures["adv_accuracy"] = (adv_logits.argmax(1) == split.labels).float().mean().item()
    return figures


def evaluate_shards(
    model: nn.Module, split: Split, attack: Attack | None, batch_size: int, ranks: Ranks
) -> dict[str, float]:
    """``evaluate_split`` with each rank taking its share of the split, the figures added up
    over the ranks: the same means, in 1/N of the time."""
    if not ranks.distributed:
        return evaluate_split(model, split, attack, batch_size)
    part = ranks.shard(torch.arange(len(split), device=split.labels.device))
    keys = ("clean_loss", "clean_accuracy") + (("adv_loss", "adv_accuracy") if attack else ())
    device = split.labels.device
    if len(part):
        figures = evaluate_split(model, split.subset(part), attack, batch_size)
        sums = {key: torch.tensor(figures[key] * len(part), device=device) for key in keys}
    else:
        sums = {key: torch.zeros((), device=device) for key in keys}
    return {key: value.item() / len(split) for key, value in ranks.sum(sums).items()}


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. ``step`` divides by 10 at 50% and 75% of training (Madry, Rice)."""
    if optim.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=optim.epochs)
    if optim.lr_schedule == "step":
        milestones = [math.ceil(optim.epochs * 0.5), math.ceil(optim.epochs * 0.75)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:04d}.pt"


# The state of a run stopped by a signal within an epoch: everything an epoch checkpoint
# holds plus the position in the epoch. Replaced by the next epoch checkpoint.
PARTIAL_CHECKPOINT = "partial.pt"


def _read_checkpoint(path: Path) -> dict:
    try:
        # mmap: tensors are read only if this checkpoint is the one resumed.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a torn or foreign file must not stop a resume
        log.warning("removing unreadable checkpoint %s: %s", path, error)
        return {}


def _take_resumable(directory: Path, run_key: str) -> dict | None:
    """The newest checkpoint of this exact run, reading each file once: the partial one when it
    continues the newest epoch checkpoint, else that epoch checkpoint. Checkpoints of other
    runs, stale partial ones and unreadable files are deleted, so the directory only ever
    holds one run."""
    # Temp files of writes a killed process never finished (the project lock means no live
    # process is writing here now).
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink()
    resumable = None
    for path in sorted(directory.glob("epoch-*.pt"), reverse=True):
        checkpoint = _read_checkpoint(path)
        if checkpoint.get("run_key") != run_key:
            path.unlink()
        elif resumable is None:
            resumable = checkpoint
    partial_path = directory / PARTIAL_CHECKPOINT
    if partial_path.exists():
        partial = _read_checkpoint(partial_path)
        completed = resumable["epoch"] if resumable is not None else 0
        if partial.get("run_key") == run_key and partial.get("epoch") == completed:
            return partial
        partial_path.unlink()
    return resumable


def _save_checkpoint(path: Path, checkpoint: dict) -> None:
    def write(stream: io.BufferedIOBase) -> None:
        torch.save(checkpoint, stream)

    write_atomic(path, write)


def _write_history(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in HISTORY_COLUMNS})
    write_atomic(path, lambda stream: stream.write(buffer.getvalue().encode()))


def fit(
    *,
    stage: str,
    model: nn.Module,
    spec: ModelSpec,
    data: PreparedData,
    optim: OptimConfig,
    recipe: AdversarialRecipe | None,
    val_attack: Attack | None,
    layout: Layout,
    seed: int,
    run_key: str,
    device: torch.device,
    select: str = "last",
    hardware: Hardware | None = None,
    ranks: Ranks | None = None,
) -> dict:
    """Train for ``optim.epochs``, checkpointing every epoch, and write the selected epoch's
    weights as the stage's model (``select``: ``best`` validation PGD accuracy, or ``last``).
    Stops early, on the last good weights, when adversarial training collapses. ``hardware``
    (default: float32, the default memory format, eager) says how the training steps run.
    ``ranks`` (default: one process) places this process under DDP
    (``iocane.training.launcher``): it trains on its shard of each global batch, and only
    rank 0 writes; every rank returns the same figures."""
    started = time.perf_counter()
    ranks = ranks or Ranks()
    if hardware is None:
        hardware = Hardware(device=device, bf16=False, channels_last=False, compile=False)
    hardware.place_model(model)
    training_model = hardware.training_model(model)
    directory = layout.checkpoint_dir(stage)
    directory.mkdir(parents=True, exist_ok=True)
    train, val = data.train.to(device), data.val.to(device)
    optimizer = make_optimizer(model, optim)
    scheduler = make_scheduler(optimizer, optim)
    shuffle = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    start_epoch = 0
    collapse: dict | None = None
    # free: the perturbation persists across replays and minibatches (Shafahi et al.).
    shard_size = math.ceil(optim.batch_size / ranks.world_size)
    free_delta = torch.zeros((shard_size, *train.images.shape[1:]), device=device)
    # Rank 0 tidies the checkpoint directory; the others read it once it is tidy.
    resumed = _take_resumable(directory, run_key) if ranks.writes else None
    ranks.barrier()
    if not ranks.writes:
        resumed = _take_resumable(directory, run_key)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        shuffle.set_state(resumed["rng"]["shuffle"])
        torch.set_rng_state(resumed["rng"]["torch"])
        if device.type == "cuda" and resumed["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"], device)
        history = list(resumed["history"])
        start_epoch = resumed["epoch"]
        collapse = resumed.get("collapse")
        if resumed.get("free_delta") is not None:
            free_delta = resumed["free_delta"].to(device)
        if collapse is not None:
            log.info("%s: stopped at epoch %d by catastrophic overfitting", stage, start_epoch)
        elif start_epoch >= optim.epochs:
            log.info(
                "%s: all %d epochs were already trained with these params, data and code; "
                "reusing %s",
                stage,
                optim.epochs,
                directory,
            )
        elif resumed.get("position") is not None:
            if not ranks.writes:  # the epoch's sums so far are rank 0's to carry
                carried = resumed["position"]["sums"]
                resumed["position"]["sums"] = {k: torch.zeros_like(v) for k, v in carried.items()}
                resumed["position"]["first_nonfinite"] = torch.tensor(-1)
            log.info(
                "%s: resuming at epoch %d, step %d of %d (the run was stopped by %s there) from %s",
                stage,
                start_epoch + 1,
                resumed["position"]["batch"] + 1,
                math.ceil(len(train) / optim.batch_size),
                resumed["position"]["signal"],
                directory / PARTIAL_CHECKPOINT,
            )
        else:
            log.info("%s: resuming after epoch %d from %s", stage, start_epoch, directory)

    def training_state(epochs_done: int) -> dict:
        """What a checkpoint holds after ``epochs_done`` complete epochs."""
        return {
            "format": 1,
            "stage": stage,
            "run_key": run_key,
            "epoch": epochs_done,
            "spec": spec.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {
                "shuffle": shuffle.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
            "history": history,
            "collapse": collapse,
            "free_delta": free_delta if recipe is not None and recipe.method == "free" else None,
        }

    if ranks.distributed:
        # Every rank needs at least two images of a batch; a shorter last batch is skipped.
        passes = nn.parallel.DistributedDataParallel(
            TrainingPasses(training_model),
            device_ids=[device.index] if device.type == "cuda" else None,
        )
        n_batches = len(train) // optim.batch_size
        n_batches += len(train) % optim.batch_size >= 2 * ranks.world_size
    else:
        passes = TrainingPasses(training_model)
        n_batches = math.ceil(len(train) / optim.batch_size)
    position = resumed.get("position") if resumed is not None else None
    images_trained = 0  # by this process's run (a resumed run counts from the resume)
    # SIGINT/SIGTERM within the loop: finish the step, save exactly this point, stop.
    with safe_stop_section(), counting_passes(model, "training") as passes_made:
        for epoch in range(start_epoch if collapse is None else optim.epochs, optim.epochs):
            epoch_started = time.perf_counter()
            model.train()
            if position is None:
                order = torch.randperm(len(train), generator=shuffle).to(device)
                first_batch, eps = 0, 0.0
                sums = {
                    key: torch.zeros((), device=device) for key in ("n", "cl", "cc", "al", "ac")
                }
                # The first step whose loss was not finite, kept on the device and read once
                # per epoch, so that the loop never waits on the host.
                first_nonfinite = torch.full((), -1, dtype=torch.long, device=device)
            else:  # resuming within this epoch: its order, sums and progress as they were
                order = position["order"].to(device)
                first_batch, eps = position["batch"], position["eps"]
                sums = {key: value.to(device) for key, value in position["sums"].items()}
                first_nonfinite = position["first_nonfinite"].to(device)
                position = None
            last_progress = epoch_started
            for batch in range(first_batch, n_batches):
                global_batch = order[batch * optim.batch_size : (batch + 1) * optim.batch_size]
                index = ranks.shard(global_batch)
                images, labels = hardware.batch(train.images[index]), train.labels[index]
                if recipe is not None:
                    eps = ramped_eps(recipe.eps, recipe.eps_ramp_epochs, epoch, batch, n_batches)
                stats = train_step(
                    training_model,
                    optimizer,
                    images,
                    labels,
                    recipe=recipe,
                    eps=eps,
                    # each rank its own random starts
                    seed=seed * 1_000_003 + epoch * 10_007 + batch + ranks.rank * 1_000_000_007,
                    batch=batch,
                    free_delta=free_delta,
                    autocast=hardware.autocast,
                    passes=passes,
                    weight=len(index) * ranks.world_size / len(global_batch),
                )
                nonfinite = ~torch.isfinite(stats.objective) & (first_nonfinite < 0)
                first_nonfinite = torch.where(nonfinite, batch, first_nonfinite)
                sums["n"] += len(labels)
                sums["cl"] += stats.clean_loss
                sums["cc"] += stats.clean_correct
                if stats.adv_loss is not None:
                    sums["al"] += stats.adv_loss
                    sums["ac"] += stats.adv_correct
                stop = ranks.agreed_stop(device)
                if stop:
                    sums, first_nonfinite = ranks.sum(sums), ranks.first_step(first_nonfinite)
                    if ranks.writes:
                        partial = training_state(epoch)
                        partial["position"] = {
                            "batch": batch + 1,
                            "order": order.cpu(),
                            "eps": eps,
                            "sums": {key: value.cpu() for key, value in sums.items()},
                            "first_nonfinite": first_nonfinite.cpu(),
                            "signal": stop,
                        }
                        _save_checkpoint(directory / PARTIAL_CHECKPOINT, partial)
                    raise Interrupted(
                        stop,
                        f"{stage}: stopped by {stop} in epoch {epoch + 1} after step "
                        f"{batch + 1} of {n_batches}, saved to {directory / PARTIAL_CHECKPOINT}; "
                        "run the same command again to resume from there",
                    )
                if time.perf_counter() - last_progress > PROGRESS_SECONDS:
                    last_progress = time.perf_counter()
                    _log_progress(stage, epoch, optim.epochs, batch, n_batches, epoch_started)
            sums, first_nonfinite = ranks.sum(sums), ranks.first_step(first_nonfinite)
            _check_finite(stage, epoch, first_nonfinite, model, directory)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            with passes_made.section("validation"):
                val_figures = evaluate_shards(model, val, val_attack, 512, ranks)
            trained = sums["n"].item()  # under DDP, a skipped short last batch is not counted
            images_trained += int(trained)
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "eps": eps,
                "train_clean_loss": sums["cl"].item() / trained,
                "train_clean_accuracy": sums["cc"].item() / trained,
                **{f"val_{key}": value for key, value in val_figures.items()},
                "seconds": time.perf_counter() - epoch_started,
            }
            if recipe is not None:
                row["train_adv_loss"] = sums["al"].item() / trained
                row["train_adv_accuracy"] = sums["ac"].item() / trained
            history.append(row)
            if recipe is not None and catastrophic_overfitting(history):
                collapse = {
                    "epoch": epoch + 1,
                    "val_adv_accuracy": row["val_adv_accuracy"],
                    "best_val_adv_accuracy": max(r["val_adv_accuracy"] for r in history[:-1]),
                    "restored_epoch": epoch,
                }
                log.warning(
                    "%s: catastrophic overfitting at epoch %d: validation PGD accuracy fell to "
                    "%.3f (best so far %.3f); restoring the weights of epoch %d and stopping",
                    stage,
                    epoch + 1,
                    collapse["val_adv_accuracy"],
                    collapse["best_val_adv_accuracy"],
                    epoch,
                )
            if ranks.writes:
                _save_checkpoint(_checkpoint_path(directory, epoch + 1), training_state(epoch + 1))
                (directory / PARTIAL_CHECKPOINT).unlink(missing_ok=True)
                _write_history(layout.history_file(stage), history)
            log.info(
                "%s epoch %d/%d  eps %.3f  lr %.4f | train clean %.3f adv %s | val clean %.3f "
                "adv %s | %.1fs",
                stage,
                epoch + 1,
                optim.epochs,
                eps,
                lr,
                row["train_clean_accuracy"],
                _format_optional(row.get("train_adv_accuracy")),
                row["val_clean_accuracy"],
                _format_optional(row.get("val_adv_accuracy")),
                row["seconds"],
            )
            stop = ranks.agreed_stop(device)
            if stop:
                raise Interrupted(
                    stop,
                    f"{stage}: stopped by {stop} after epoch {epoch + 1} was saved; "
                    "run the same command again to resume from there",
                )
            if collapse is not None:
                break

    # Every rank holds the same history; only rank 0's checkpoints exist to select from.
    selection = {
        "selected_epoch": select_epoch(history, select, collapse),
        "selection": select,
        "best_epoch": select_epoch(history, "best", collapse),
        "last_epoch": int(history[-1]["epoch"]),
    }
    if ranks.writes:
        _select_weights(stage, directory, model, spec, history, selection, collapse, layout)
    final = dict(history[selection["selected_epoch"] - 1])
    final.update(
        {
            **selection,
            "catastrophic_overfitting": collapse,
            "epochs": optim.epochs,
            "resumed_after_epoch": resumed["epoch"] if resumed is not None else None,
            # Steps of the next epoch already done when a signal stopped the run there.
            "resumed_after_step": (resumed.get("position") or {}).get("batch")
            if resumed is not None
            else None,
            "seconds": time.perf_counter() - started,
            "device": str(device),
            "precision": "bf16" if hardware.bf16 else "fp32",
            "compiled": hardware.compile,
            "processes": ranks.world_size,
            "images_trained": images_trained,
            # every process's passes (each counts its own shard's)
            **{k: int(v) for k, v in ranks.sum(passes_made.totals(device)).items()},
            "run_key": run_key,
        }
    )
    if ranks.writes:
        write_json(layout.metrics_file(stage), final)
    return final


def _check_finite(
    stage: str, epoch: int, first_nonfinite: torch.Tensor, model: nn.Module, directory: Path
) -> None:
    """Stop before this epoch is checkpointed if its loss or weights stopped being finite; the
    checkpoints of the epochs before it stay, and nothing downstream runs."""
    step = int(first_nonfinite)
    weights_finite = bool(torch.stack([p.isfinite().all() for p in model.parameters()]).all())
    if step < 0 and weights_finite:
        return
    where = f"at epoch {epoch + 1}, step {step + 1}" if step >= 0 else f"during epoch {epoch + 1}"
    kept = sorted(directory.glob("epoch-*.pt"))
    raise TrainingDiverged(
        f"{stage}: training diverged: the {'loss' if step >= 0 else 'weights'} became "
        f"non-finite {where}. Lower {stage}.lr (or train.eps); "
        + (f"the last good checkpoint, {kept[-1].name}, is kept" if kept else "no epoch was kept")
    )


COLLAPSE_DROP = 0.2  # a fall of validation PGD accuracy this far below its best is a collapse


def catastrophic_overfitting(history: list[dict]) -> bool:
    """Whether the latest epoch's validation PGD accuracy fell more than ``COLLAPSE_DROP``
    below the best epoch before it. Catastrophic overfitting (Wong et al. 2020) takes robust
    accuracy to near zero within an epoch while single-step accuracy stays high."""
    accuracies = [row.get("val_adv_accuracy") for row in history]
    if len(accuracies) < 2 or accuracies[-1] is None or accuracies[0] is None:
        return False
    return accuracies[-1] < max(accuracies[:-1]) - COLLAPSE_DROP


def select_epoch(history: list[dict], select: str, collapse: dict | None) -> int:
    """The epoch whose weights become the model: the best validation PGD accuracy (the latest
    on a tie) or the last epoch, never one at or after a collapse."""
    candidates = history if collapse is None else history[: collapse["restored_epoch"]]
    scored = [row for row in candidates if row.get("val_adv_accuracy") is not None]
    if select == "last" or not scored:
        return int(candidates[-1]["epoch"])
    return int(max(scored, key=lambda row: (row["val_adv_accuracy"], row["epoch"]))["epoch"])


def _select_weights(
    stage: str,
    directory: Path,
    model: nn.Module,
    spec: ModelSpec,
    history: list[dict],
    selection: dict,
    collapse: dict | None,
    layout: Layout,
) -> None:
    """Write ``best.pt``, ``last.pt`` and the selected one as ``model.pt``; say which."""
    model.to(memory_format=torch.contiguous_format)  # model files carry the default layout
    chosen, best, last = (selection[k] for k in ("selected_epoch", "best_epoch", "last_epoch"))
    select = selection["selection"]
    for name, epoch in (("best", best), ("last", last)):
        checkpoint = torch.load(_checkpoint_path(directory, epoch), weights_only=True)
        model.load_state_dict(checkpoint["model"])
        save_model(directory / f"{name}.pt", model, spec)
    checkpoint = torch.load(_checkpoint_path(directory, chosen), weights_only=True)
    model.load_state_dict(checkpoint["model"])
    save_model(layout.model_file(stage), model, spec)
    if len(history) > 1 and stage == "train":
        log.info(
            "%s: the model is epoch %d of %d (%s; best validation PGD accuracy at epoch %d, "
            "last epoch %d)",
            stage,
            chosen,
            len(history),
            select if collapse is None else f"{select}, before the collapse",
            best,
            last,
        )


def _log_progress(
    stage: str, epoch: int, epochs: int, batch: int, n_batches: int, epoch_started: float
) -> None:
    elapsed = time.perf_counter() - epoch_started
    remaining = elapsed / (batch + 1) * (n_batches - batch - 1)
    log.info(
        "%s epoch %d/%d  batch %d/%d (%.0f%%)  %.1fs elapsed, about %.0fs left in this epoch",
        stage,
        epoch + 1,
        epochs,
        batch + 1,
        n_batches,
        100 * (batch + 1) / n_batches,
        elapsed,
        remaining,
    )


def _format_optional(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def code_fingerprint() -> str:
    """sha256 of the code that shapes a trained model; other code's checkpoints never resume."""
    digest = hashlib.sha256()
    here = Path(__file__)
    siblings = ("recipes", "hardware", "ranks", "launcher", "passes")
    files = [here, *(here.with_name(f"{name}.py") for name in siblings)]
    for package in (attacks, models):
        files += sorted(Path(package.__file__).parent.glob("*.py"))
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def run_key(*parts: object) -> str:
    """What a checkpoint must match to be resumed: params, data, starting weights and code."""
    payload = json.dumps([*parts, code_fingerprint()], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def validation_attack(config: Config) -> PGD:
    """Per-epoch validation: the training attack at full eps, one fixed-seed restart."""
    train = config.train
    return PGD(eps=train.eps, norm=train.norm, steps=train.steps, step_size=train.step_size, seed=1)


def train_in_process(config: Config, layout: Layout, ranks: Ranks, device: torch.device) -> dict:
    """This process's part of the ``train`` stage (all of it when it is alone)."""
    hardware = resolve_hardware(device, config.runtime)
    data = load_prepared(layout)
    warmup_file = layout.model_file("warmup")
    model, spec = load_model(warmup_file, device)
    torch.manual_seed(config.seed + 1)
    train = config.train
    return fit(
        stage="train",
        model=model,
        spec=spec,
        data=data,
        optim=train,
        recipe=AdversarialRecipe.from_config(train),
        val_attack=validation_attack(config),
        layout=layout,
        seed=config.seed + 1,
        run_key=run_key(
            "train",
            config.seed,
            config.to_dict()["train"],
            data.meta["fingerprint"],
            sha256_file(warmup_file),
            hardware.describe(),
        ),
        device=device,
        select=train.select,
        hardware=hardware,
        ranks=ranks,
    )
