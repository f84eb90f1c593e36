"""The checkpoint files of a training stage, and the run key that says which run wrote them.

``checkpoints/<stage>/`` holds one ``epoch-NNNN.pt`` per complete epoch and, while a run stopped
by a signal within an epoch waits to resume, ``partial.pt`` (the state at that step plus the
position in the epoch; the next epoch checkpoint replaces it). Every file is written atomically
and read with ``weights_only=True``, so a torn or foreign file never runs code. A checkpoint is
resumed only by the run that wrote it: the same params, data, starting weights and code, which
its run key hashes (``run_key``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import torch

from iocane.files import write_atomic
from iocane.pipeline.keys import stage_code_version

log = logging.getLogger("iocane")

# The state of a run stopped by a signal within an epoch: everything an epoch checkpoint
# holds plus the position in the epoch. Replaced by the next epoch checkpoint.
PARTIAL_CHECKPOINT = "partial.pt"


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:04d}.pt"


def kept_checkpoints(directory: Path) -> list[Path]:
    """The epoch checkpoints in the directory, oldest first."""
    return sorted(directory.glob("epoch-*.pt"))


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


def run_key(stage: str, *parts: object) -> str:
    """What a checkpoint of ``stage`` must match to be resumed: params, data, starting weights
    and the code the stage runs (its code deps in dvc.yaml, the list the caches key on too), so
    other code's checkpoints never resume."""
    code = stage_code_version(stage)[:16]
    payload = json.dumps([stage, *parts, code], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
