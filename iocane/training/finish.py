"""The end of a run: the selected epoch's weights become the stage's model, and
``metrics/<stage>.json`` says which epoch that is and how the run went (its time, hardware,
passes, images and a time budget's figures).
"""

from __future__ import annotations

import time

from iocane.base.files import write_json
from iocane.training.budget import BudgetDecision
from iocane.training.epoch import EpochLoop
from iocane.training.passes import PassCount
from iocane.training.selection import select_weights, selection
from iocane.training.state import TrainState


def finish_run(
    epochs: EpochLoop,
    state: TrainState,
    *,
    select: str,
    resumed: dict | None,
    started: float,
    images_trained: int,
    counter: PassCount,
) -> dict:
    """The selected weights as the stage's model, and ``metrics/<stage>.json``: the selected
    epoch's row, the selection, and how the run went (rank 0 writes; every rank returns it)."""
    ranks, hardware, device = epochs.ranks, epochs.hardware, epochs.device
    # Every rank holds the same history; only rank 0's checkpoints exist to select from.
    chosen = selection(state.history, select, state.collapse)
    if ranks.writes:
        select_weights(
            stage=epochs.stage,
            directory=epochs.directory,
            model=state.model,
            spec=epochs.spec,
            history=state.history,
            chosen=chosen,
            collapse=state.collapse,
            layout=epochs.layout,
        )
    final = dict(state.history[chosen["selected_epoch"] - 1])
    final.update(
        {
            **chosen,
            "catastrophic_overfitting": state.collapse,
            "epochs": epochs.epochs,
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
            **{k: int(v) for k, v in ranks.sum(counter.totals(device)).items()},
            "run_key": epochs.run_key,
            **(BudgetDecision.from_dict(state.budget).metrics() if state.budget else {}),
        }
    )
    if state.budget is not None:
        # Fewer epochs than decided, and no collapse: the budget ran out first.
        cut = state.epoch < final["budget_epochs"] and state.collapse is None
        final["budget_stopped_after_epoch"] = state.epoch if cut else None
        # The plan trained (it follows the machine), and the budget's seconds its epochs used.
        final["last_epoch_steps"] = epochs.last_epoch_steps
        final["budget_training_seconds"] = sum(row["seconds"] for row in state.history)
    if ranks.writes:
        write_json(epochs.layout.metrics_file(epochs.stage), final)
    return final
