"""Where a run picks up: the newest checkpoint of this run (every rank reads the one rank 0 left
tidy), its state put back with a line saying where training resumes, and the partial checkpoint
a signal leaves inside an epoch, with the message that says how to go on from it.
"""

from __future__ import annotations

import logging
import math

import torch

from iocane.base.interrupts import Interrupted
from iocane.training.checkpoints import PARTIAL_CHECKPOINT, save_partial, take_resumable
from iocane.training.epoch import EpochLoop, EpochProgress
from iocane.training.state import TrainState

log = logging.getLogger("iocane")


def take_resumable_checkpoint(epochs: EpochLoop) -> dict | None:
    """The newest checkpoint of this run, if there is one (its ``position`` says where in an
    epoch a signal stopped it, its ``budget`` what a time budget decided)."""
    directory, run_key, ranks = epochs.directory, epochs.run_key, epochs.ranks
    # Rank 0 tidies the checkpoint directory; the others read it once it is tidy.
    resumed = take_resumable(directory, run_key) if ranks.writes else None
    ranks.barrier()
    if not ranks.writes:
        resumed = take_resumable(directory, run_key)
    return resumed


def restore_state(state: TrainState, epochs: EpochLoop, resumed: dict | None) -> None:
    """Put the checkpoint a run resumes from back into its state, and say where it resumes."""
    if resumed is None:
        return
    stage, directory, ranks = epochs.stage, epochs.directory, epochs.ranks
    state.restore(resumed)
    if state.collapse is not None:
        log.info("%s: stopped at epoch %d by catastrophic overfitting", stage, state.epoch)
    elif state.epoch >= epochs.epochs:
        log.info(
            "%s: all %d epochs were already trained with these params, data and code; reusing %s",
            stage,
            epochs.epochs,
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
            state.epoch + 1,
            resumed["position"]["batch"] + 1,
            math.ceil(len(epochs.train) / epochs.batch_size),
            resumed["position"]["signal"],
            directory / PARTIAL_CHECKPOINT,
        )
    else:
        log.info("%s: resuming after epoch %d from %s", stage, state.epoch, directory)


def stopped_within_epoch(
    epochs: EpochLoop, state: TrainState, epoch: int, progress: EpochProgress
) -> Interrupted:
    """Save the point a signal stopped the epoch at (rank 0) and say how to go on from it."""
    if epochs.ranks.writes:
        partial = epochs.checkpoint(state)
        partial["position"] = progress.position()
        save_partial(epochs.directory, partial)
    return Interrupted(
        progress.stopped,
        f"{epochs.stage}: stopped by {progress.stopped} in epoch {epoch + 1} after step "
        f"{progress.batch} of {epochs.steps_in(epoch)}, saved to "
        f"{epochs.directory / PARTIAL_CHECKPOINT}; "
        "run the same command again to resume from there",
    )
