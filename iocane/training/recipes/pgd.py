"""``pgd``: Madry et al. 2018. ``(1 - adv_weight) * CE(clean) + adv_weight * CE(PGD example)``.

The loss the single-step recipes (``fgsm``, ``fgsm_rs``, ``nfgsm``), ``alp`` and ``multi`` build
on; ``adv_weight`` 1 is pure Madry, whose clean pass is only reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attacks import PGD, Attack
from iocane.training.recipes.base import BatchStats, Recipe, training_loss


def pgd_text(train: Any) -> str:
    """The PGD attack's settings in words (the cards of ``pgd``, ``trades``, ``alp``, ``multi``)."""
    return (
        f"{train.steps} steps of {train.step_size:g}, random start "
        f"{'on' if train.random_start else 'off'}"
    )


@dataclass(frozen=True)
class AdversarialLossRecipe(Recipe):
    """A recipe whose loss is the ``pgd`` loss on its attack's examples (its ``adv_weight``)."""

    adv_weight: float

    def loss(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        attack: Attack,
        passes: nn.Module | None = None,
    ) -> tuple[torch.Tensor, BatchStats]:
        return training_loss(model, images, labels, attack, self.adv_weight, passes)


@dataclass(frozen=True)
class PgdRecipe(AdversarialLossRecipe):
    """PGD adversarial training: ``steps`` steps of ``step_size`` (scaled with a ramped eps)."""

    name = "pgd"

    step_size: float
    steps: int
    random_start: bool

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            f"PGD (Madry et al. 2018), {pgd_text(train)}, "
            f"adversarial loss weight {train.adv_weight:g}"
        )

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        scale = eps / self.eps  # every radius and step keeps its ratio while eps ramps up
        return PGD(
            eps=eps,
            norm=self.norm,
            steps=self.steps,
            step_size=self.step_size * scale,
            random_start=self.random_start,
            seed=seed,
        )
