"""``alp``: Kannan et al. 2018, adversarial logit pairing.

The ``pgd`` loss plus ``alp_weight * mean ||z(clean) - z(adversarial)||^2`` over the logits z,
on PGD examples; both passes train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attacks import Attack
from iocane.training.recipes.base import (
    BatchStats,
    batch_stats,
    mixed_cross_entropy,
    paired_logits,
)
from iocane.training.recipes.pgd import PgdRecipe, pgd_text


def alp_objective(
    clean_logits: torch.Tensor,
    adv_logits: torch.Tensor,
    labels: torch.Tensor,
    adv_weight: float,
    pairing: float,
) -> torch.Tensor:
    """ALP: the mixed cross-entropy plus ``pairing`` times the mean squared L2 distance between
    the clean and the adversarial logits."""
    distance = (clean_logits - adv_logits).pow(2).sum(dim=1).mean()
    return mixed_cross_entropy(clean_logits, adv_logits, labels, adv_weight) + pairing * distance


@dataclass(frozen=True)
class AlpRecipe(PgdRecipe):
    name = "alp"

    alp_weight: float

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            f"adversarial logit pairing (Kannan et al. 2018), pairing weight "
            f"{train.alp_weight:g}, PGD {pgd_text(train)}, "
            f"adversarial loss weight {train.adv_weight:g}"
        )

    def loss(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        attack: Attack,
        passes: nn.Module | None = None,
    ) -> tuple[torch.Tensor, BatchStats]:
        clean_logits, adv_logits = paired_logits(model, images, labels, attack, passes)
        loss = alp_objective(clean_logits, adv_logits, labels, self.adv_weight, self.alp_weight)
        return loss, batch_stats(clean_logits, adv_logits, labels)
