"""``free``: Shafahi et al. 2019, "Adversarial Training for Free!".

Each minibatch is replayed ``free_replays`` times; one backward pass gives the weight gradient
and the perturbation's, which persists across replays and batches (the state this recipe
carries: the train state's ``free_delta``, kept in checkpoints). An epoch costs
``free_replays`` passes per batch, so use about 1/m of the epochs. It crafts no examples apart
from training: its perturbation step comes from the training pass itself, in train mode.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attacks import Attack
from attacks.threat import threat_model
from iocane.training.recipes.base import (
    Autocast,
    BatchStats,
    Recipe,
    TrainingPasses,
    batch_stats,
    reported_clean_logits,
)


@dataclass(frozen=True)
class FreeRecipe(Recipe):
    name = "free"
    carries_perturbation = True

    free_replays: int

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            f"free adversarial training (Shafahi et al. 2019), {train.free_replays} "
            "replays per minibatch"
        )

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        """None: the perturbation comes from the training pass itself."""
        return None

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
        """The replays of one minibatch; the batch's rows of ``carried`` take the new
        perturbation."""
        n = len(labels)
        delta, stats = free_step(
            model,
            optimizer,
            images,
            labels,
            delta=carried[:n],
            eps=eps,
            recipe=self,
            autocast=autocast,
            passes=passes,
            weight=weight,
        )
        carried[:n] = delta
        return stats


def free_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    delta: torch.Tensor,
    eps: float,
    recipe: FreeRecipe,
    autocast: Autocast = contextlib.nullcontext,
    passes: nn.Module | None = None,
    weight: float = 1.0,
) -> tuple[torch.Tensor, BatchStats]:
    """``free_replays`` weight updates on one minibatch, each also stepping the persistent
    perturbation ``delta`` by eps along its gradient's sign (Linf) or direction (L2). Returns
    the new perturbation and the last replay's figures."""
    passes = passes if passes is not None else TrainingPasses(model)
    threat = threat_model(recipe.norm)
    delta = threat.project(delta, eps)
    delta = (images + delta).clamp(0, 1) - images
    for _ in range(recipe.free_replays):
        delta.requires_grad_(True)
        with autocast():
            (adv_logits,) = passes(images + delta)
            loss = F.cross_entropy(adv_logits, labels)
        optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        optimizer.step()
        with torch.no_grad():
            delta = threat.project(delta + threat.step(delta.grad, eps), eps)
            delta = (images + delta).clamp(0, 1) - images
    with autocast():
        clean_logits = reported_clean_logits(model, images)
    stats = batch_stats(clean_logits, adv_logits, labels)
    stats.objective = loss.detach()  # a non-finite replay leaves the last one non-finite too
    return delta.detach(), stats
