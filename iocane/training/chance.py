"""Is the run learning at all? A stage whose clean accuracy is still at chance once it has had
a fair number of steps stops, with one line naming the likely cause, before it spends the rest
of its epochs (or its time budget) on a dead network.

The test, made once, at the end of the first epoch by which ``MIN_STEPS`` optimiser steps were
taken (the first epoch, unless an epoch is shorter than that; a run shorter than that is not
judged: a handful of steps from scratch is legitimately at chance):

- chance is the accuracy of always answering the most common class (1 / classes when the classes
  are balanced);
- the epoch's clean training accuracy (the clean pass over the training batches, which the epoch
  loop sums; never the accuracy on adversarial examples, which can legitimately be low) and the
  clean validation accuracy after the epoch must both be within ``Z`` standard errors of chance
  for the number of images each was measured on (a binomial proportion: a model at chance stays
  under the line with probability 99.9%). Both, because the training figure averages the epoch
  from its first step, when a model that is learning was still at chance.

The test is against chance, not against the starting point: a model that starts from weights
that already classify (``model.weights``, or the warmup's weights in the ``train`` stage) is
above chance unless training destroyed what it knew, which is what the message then says.
"""

from __future__ import annotations

import math

import torch

from iocane.base.errors import NotLearning

MIN_STEPS = 50
Z = 3.0


def chance_accuracy(labels: torch.Tensor) -> float:
    """The accuracy of answering the most common class of ``labels``."""
    return torch.bincount(labels.flatten().cpu()).max().item() / len(labels)


def at_chance(accuracy: float, chance: float, n_images: float) -> bool:
    """Whether an accuracy measured on ``n_images`` is within ``Z`` standard errors of chance."""
    return accuracy <= chance + Z * math.sqrt(chance * (1 - chance) / max(n_images, 1))


def judged_epoch(n_batches: int, epochs: int) -> int | None:
    """The 0-based epoch after which the run is judged, None when it is too short to judge."""
    epoch = math.ceil(MIN_STEPS / max(n_batches, 1)) - 1
    return epoch if epoch < epochs else None


def check_learning(
    *,
    stage: str,
    epoch: int,
    row: dict,
    images_trained: float,
    train_labels: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    lr: float,
    eps: float | None,
) -> None:
    """Raise ``NotLearning`` when the epoch's row shows clean accuracy at chance on the training
    batches and on the validation split (an empty validation split leaves the first alone)."""
    train_accuracy = row["train_clean_accuracy"]
    if not at_chance(train_accuracy, chance_accuracy(train_labels), images_trained):
        return
    validation = ""
    if len(val_labels):
        val_accuracy = row["val_clean_accuracy"]
        if not at_chance(val_accuracy, chance_accuracy(val_labels), len(val_labels)):
            return
        validation = f" (validation {val_accuracy:.3f})"
    too_large = f", train.eps ({eps:g}) too large for it to stay accurate" if eps else ""
    raise NotLearning(
        f"{stage}: not learning: training accuracy {train_accuracy:.3f} after epoch {epoch + 1} "
        f"is chance for {num_classes} classes{validation}; the learning rate ({stage}.lr "
        f"{lr:g}) may be too high (or too low) for this model{too_large}, or the model cannot "
        "fit the data"
    )
