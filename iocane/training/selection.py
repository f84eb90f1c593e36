"""Which epoch's weights become the stage's model: catastrophic-overfitting detection, and the
choice between the best and the last epoch (``train.select``).

Catastrophic overfitting (Wong et al. 2020) takes robust accuracy to near zero within an epoch
while single-step accuracy stays high; when the validation PGD accuracy collapses, training
stops and the weights of the epoch before the collapse are the model. Rice et al. 2020 show
robust overfitting in long runs: ``best`` keeps the epoch of the best validation PGD accuracy.

A certified recipe's rows (``ibp``, ``crown_ibp``) carry ``val_certified_accuracy``, the share
of the validation split the IBP bound certifies: ``best`` keeps the epoch where that is best, and
no collapse is looked for (the bound has no attack to overfit to; validation PGD accuracy may
fall legitimately while the ramp trades clean accuracy for certificates).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from iocane.base.layout import Layout
from iocane.model_files import save_model
from iocane.training.checkpoints import load_weights
from models import ModelSpec

log = logging.getLogger("iocane")

COLLAPSE_DROP = 0.2  # a fall of validation PGD accuracy this far below its best is a collapse
CERTIFIED = "val_certified_accuracy"  # the certified recipes' figure (iocane.training.validation)


def certified_history(history: list[dict]) -> bool:
    """Whether the history is a certified recipe's (its rows carry the certified figure)."""
    return any(row.get(CERTIFIED) is not None for row in history)


def selection_figure(history: list[dict]) -> str:
    """The validation figure ``best`` maximises: certified accuracy for a certified recipe's
    history, else PGD accuracy."""
    return CERTIFIED if certified_history(history) else "val_adv_accuracy"


def catastrophic_overfitting(history: list[dict]) -> bool:
    """Whether the latest epoch's validation PGD accuracy fell more than ``COLLAPSE_DROP``
    below the best epoch before it. Catastrophic overfitting (Wong et al. 2020) takes robust
    accuracy to near zero within an epoch while single-step accuracy stays high."""
    if certified_history(history):
        return False
    accuracies = [row.get("val_adv_accuracy") for row in history]
    if len(accuracies) < 2 or accuracies[-1] is None or accuracies[0] is None:
        return False
    return accuracies[-1] < max(accuracies[:-1]) - COLLAPSE_DROP


def collapse_record(stage: str, history: list[dict]) -> dict | None:
    """The record of a collapse at the latest epoch (and a warning saying so), or None."""
    if not catastrophic_overfitting(history):
        return None
    row = history[-1]
    epoch = int(row["epoch"]) - 1  # 0-based, as the loop counts
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
    return collapse


def select_epoch(history: list[dict], select: str, collapse: dict | None) -> int:
    """The epoch whose weights become the model: the best validation PGD accuracy (certified
    accuracy for a certified recipe; the latest on a tie) or the last epoch, never one at or
    after a collapse."""
    candidates = history if collapse is None else history[: collapse["restored_epoch"]]
    figure = selection_figure(history)
    scored = [row for row in candidates if row.get(figure) is not None]
    if select == "last" or not scored:
        return int(candidates[-1]["epoch"])
    return int(max(scored, key=lambda row: (row[figure], row["epoch"]))["epoch"])


def selection(history: list[dict], select: str, collapse: dict | None) -> dict:
    """The metrics' account of the choice: the selected, the best and the last epoch."""
    return {
        "selected_epoch": select_epoch(history, select, collapse),
        "selection": select,
        "best_epoch": select_epoch(history, "best", collapse),
        "last_epoch": int(history[-1]["epoch"]),
    }


def epochs_read(history: list[dict], select: str, collapse: dict | None) -> set[int]:
    """The epochs whose checkpoints ``select_weights`` reads if the run ends now: the selected,
    the best and the last. Retention keeps these (and only these, by default): the best so far
    only ever moves to the newest epoch, and after a collapse the epochs before it were the
    newest or the best when the collapse's epoch was written, so nothing read later is gone."""
    chosen = selection(history, select, collapse)
    return {chosen["selected_epoch"], chosen["best_epoch"], chosen["last_epoch"]}


def select_weights(
    *,
    stage: str,
    directory: Path,
    model: nn.Module,
    spec: ModelSpec,
    history: list[dict],
    chosen: dict,
    collapse: dict | None,
    layout: Layout,
) -> None:
    """Write ``best.pt``, ``last.pt`` and the selected one (``chosen``, from ``selection``) as
    the stage's model file; say which."""
    model.to(memory_format=torch.contiguous_format)  # model files carry the default layout
    selected, best, last = (chosen[k] for k in ("selected_epoch", "best_epoch", "last_epoch"))
    select = chosen["selection"]
    for name, epoch in (("best", best), ("last", last)):
        model.load_state_dict(load_weights(directory, epoch))
        save_model(directory / f"{name}.pt", model, spec)
    model.load_state_dict(load_weights(directory, selected))
    save_model(layout.model_file(stage), model, spec)
    if len(history) > 1 and stage == "train":
        log.info(
            "%s: the model is epoch %d of %d (%s; best validation %s accuracy at epoch %d, "
            "last epoch %d)",
            stage,
            selected,
            len(history),
            select if collapse is None else f"{select}, before the collapse",
            "certified" if certified_history(history) else "PGD",
            best,
            last,
        )
