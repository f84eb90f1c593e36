"""``ibp``: interval bound propagation training, Gowal et al. 2018, "On the Effectiveness of
Interval Bound Propagation for Training Verifiably Robust Models".

The loss is ``kappa * CE(clean logits) + (1 - kappa) * CE(-m)``, where ``m`` holds per sample
the IBP lower bounds of ``logit[y] - logit[j]`` over the eps ball (``iocane.certify``,
``margin_lower_bounds``; 0 at ``j == y``): ``-m`` are the worst-case logits up to a per-sample
shift, to which cross-entropy is blind. eps ramps linearly from 0 over ``train.eps_ramp_epochs``
(the epoch loop ramps it every batch, as the paper's per-step ramp), and ``kappa`` ramps from
``train.kappa_start`` to ``train.kappa_end`` over the same ramp (the paper: 1 to 0.5), so the
first batches train as natural training does.

No attack: the bound is the adversary. The bound is taken with the model in eval mode, the
function the verifier certifies after training (batch norm by its running statistics, no
dropout); the clean pass trains in train mode, through the step's passes, so under DDP that
forward call is the one whose gradient exchange carries the whole loss's gradient (the bound's
terms reach the same parameters in the same backward pass). Selection keeps the epoch with the
best IBP-certified validation accuracy (``certified``; ``iocane.training.selection``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from attacks import Attack
from iocane.certify import certified_mask, margin_lower_bounds
from iocane.training.recipes.base import Autocast, BatchStats, Recipe, backward_and_step


def ramp_progress(eps: float, full_eps: float) -> float:
    """How far the eps ramp has come, in [0, 1]: the schedules of kappa and beta follow it, so
    they ramp exactly as eps does (per batch, shortened with a time budget's ramp)."""
    return min(1.0, max(0.0, eps / full_eps))


def scheduled(start: float, end: float, progress: float) -> float:
    """A value ramped linearly from ``start`` (progress 0) to ``end`` (progress 1)."""
    return start + (end - start) * progress


@dataclass(frozen=True)
class IbpRecipe(Recipe):
    """IBP training: the bound of ``bound_method`` mixed into the loss by the kappa schedule."""

    name = "ibp"
    certified: ClassVar[bool] = True  # validation certifies; selection keeps the best certified

    kappa_start: float
    kappa_end: float

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            "IBP certified training (Gowal et al. 2018): kappa * CE(clean) + (1 - kappa) * "
            f"CE(worst-case IBP logits), kappa from {train.kappa_start:g} to {train.kappa_end:g} "
            f"over the eps ramp of {train.eps_ramp_epochs} epochs"
        )

    def kappa(self, eps: float) -> float:
        """The weight of the clean loss at (ramped) ``eps``."""
        return scheduled(self.kappa_start, self.kappa_end, ramp_progress(eps, self.eps))

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        """None: the bound, not an attack, is the adversary."""
        return None

    def margin_bounds(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float
    ) -> torch.Tensor:
        """The (N, classes) lower bounds of the margins over the ball of radius ``eps``."""
        return margin_lower_bounds(model, images, labels, norm=self.norm, eps=eps, method="ibp")

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        eps: float,
        seed: int,
        batch: int,
        carried: torch.Tensor,
        autocast: Autocast,
        passes: nn.Module,
        weight: float,
    ) -> BatchStats:
        """One weight update on the certified loss; the batch's adversarial figures are the
        bound's: its cross-entropy and the share of images it certifies at the ramped eps."""
        with autocast():
            loss, stats = certified_loss(self, model, images, labels, eps, passes)
        backward_and_step(optimizer, loss, weight)
        stats.objective = loss.detach()
        return stats


def certified_loss(
    recipe: IbpRecipe,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    passes: nn.Module,
) -> tuple[torch.Tensor, BatchStats]:
    """``kappa * CE(clean) + (1 - kappa) * CE(-margin bounds)`` and the batch's figures."""
    (clean_logits,) = passes(images)
    clean_loss = F.cross_entropy(clean_logits, labels)
    bounded = getattr(model, "_orig_mod", model)  # torch.compile's module: fx traces the original
    was_training = bounded.training
    bounded.eval()  # the function the verifier certifies (batch norm by running statistics)
    try:
        margins = recipe.margin_bounds(bounded, images, labels, eps)
    finally:
        bounded.train(was_training)
    bound_loss = F.cross_entropy(-margins, labels)
    kappa = recipe.kappa(eps)
    loss = kappa * clean_loss + (1 - kappa) * bound_loss
    n = len(labels)
    detached = clean_logits.detach()
    stats = BatchStats(
        clean_loss=clean_loss.detach() * n,
        clean_correct=(detached.argmax(1) == labels).sum(),
        adv_loss=bound_loss.detach() * n,
        adv_correct=certified_mask(margins.detach(), labels).sum(),
    )
    return loss, stats
