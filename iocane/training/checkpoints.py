"""The checkpoint files of a training stage, and the run key that says which run wrote them.

``checkpoints/<stage>/`` holds ``epoch-NNNN.pt`` checkpoints of complete epochs and, while a run
stopped by a signal within an epoch waits to resume, ``partial.pt`` (the state at that step plus
the position in the epoch; the next epoch checkpoint replaces it). Which epochs stay is
``<stage>.keep_checkpoints``: ``all``, or (the default) ``newest_and_best``: the newest, which a
resume needs, and the epochs the selection reads at the end (the best and the selected one,
``iocane.training.selection.epochs_read``); every other is deleted once the newer checkpoint is
written whole (``prune_checkpoints``), so a run of hundreds of epochs holds two or three files.
Every file is written atomically and read with ``weights_only=True``, so a torn or foreign file
never runs code. A checkpoint is resumed only by the run that wrote it: the same params, data,
starting weights and code, which its run key hashes (``run_key``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Collection
from pathlib import Path

import torch

from iocane.base.config import Config
from iocane.base.files import write_atomic
from iocane.pipeline.keys import stage_code_version, stage_params

log = logging.getLogger("iocane")

# The state of a run stopped by a signal within an epoch: everything an epoch checkpoint
# holds plus the position in the epoch. Replaced by the next epoch checkpoint.
PARTIAL_CHECKPOINT = "partial.pt"


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:04d}.pt"


def kept_checkpoints(directory: Path) -> list[Path]:
    """The epoch checkpoints in the directory, oldest first."""
    return sorted(directory.glob("epoch-*.pt"))


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch an ``epoch-NNNN.pt`` name stands for; None for any other name."""
    match = re.fullmatch(r"epoch-(\d+)\.pt", path.name)
    return int(match.group(1)) if match else None


def prune_checkpoints(directory: Path, keep: Collection[int]) -> list[Path]:
    """Delete the epoch checkpoints whose epoch is not in ``keep``; returns those deleted. Call it
    only after the newest checkpoint is written whole (``save_epoch`` returns once it is): a
    process killed at any moment leaves a resumable newest checkpoint."""
    removed = []
    for path in kept_checkpoints(directory):
        epoch = checkpoint_epoch(path)
        if epoch is not None and epoch not in keep:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, or ``{}`` when it cannot be read (the caller removes it)."""
    try:
        # mmap: tensors are read only if this checkpoint is the one resumed.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a torn or foreign file must not stop a resume
        log.warning("removing unreadable checkpoint %s: %s", path, error)
        return {}


def take_resumable(directory: Path, run_key: str) -> dict | None:
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
        checkpoint = read_checkpoint(path)
        if checkpoint.get("run_key") != run_key:
            path.unlink()
        elif resumable is None:
            resumable = checkpoint
    partial_path = directory / PARTIAL_CHECKPOINT
    if partial_path.exists():
        partial = read_checkpoint(partial_path)
        completed = resumable["epoch"] if resumable is not None else 0
        if partial.get("run_key") == run_key and partial.get("epoch") == completed:
            return partial
        partial_path.unlink()
    return resumable


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    """Write a checkpoint atomically: a reader sees the old file or the whole new one."""

    def write(stream: io.BufferedIOBase) -> None:
        torch.save(checkpoint, stream)

    write_atomic(path, write)


def save_epoch(directory: Path, checkpoint: dict) -> None:
    """The checkpoint of a complete epoch; a partial one of that epoch is now stale."""
    save_checkpoint(checkpoint_path(directory, checkpoint["epoch"]), checkpoint)
    (directory / PARTIAL_CHECKPOINT).unlink(missing_ok=True)


def save_partial(directory: Path, checkpoint: dict) -> Path:
    """The checkpoint of a run stopped within an epoch; returns where it went."""
    path = directory / PARTIAL_CHECKPOINT
    save_checkpoint(path, checkpoint)
    return path


def load_weights(directory: Path, epoch: int) -> dict[str, torch.Tensor]:
    """The model weights of an epoch checkpoint (weights-only loading)."""
    return torch.load(checkpoint_path(directory, epoch), weights_only=True)["model"]


# Params that decide which files stay, not what training computes: left out of the run key, so
# changing them goes on with the run's checkpoints.
NOT_IN_RUN_KEY = ("keep_checkpoints",)


def trained_params(section: dict) -> dict:
    """A params section as the run key sees it: without the keys of ``NOT_IN_RUN_KEY``."""
    return {key: value for key, value in section.items() if key not in NOT_IN_RUN_KEY}


def run_params(stage: str, config: Config) -> dict:
    """The params a checkpoint of ``stage`` is keyed on: the ones dvc.yaml declares for the
    stage (the list its cache key reads too), less ``NOT_IN_RUN_KEY``."""
    return {
        key: trained_params(value) if isinstance(value, dict) else value
        for key, value in stage_params(stage, config).items()
    }


def run_key(stage: str, *parts: object) -> str:
    """What a checkpoint of ``stage`` must match to be resumed: params, data, starting weights
    and the code the stage runs (its code deps in dvc.yaml, the list the caches key on too), so
    other code's checkpoints never resume."""
    code = stage_code_version(stage)[:16]
    payload = json.dumps([stage, *parts, code], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
