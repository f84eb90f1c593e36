"""``trades``: Zhang et al. 2019. ``CE(clean) + beta * KL(p(clean) || p(adversarial))``.

The adversarial example maximises that KL term from a small Gaussian start
(``attacks.trades.TradesAttack``); ``adv_weight`` plays no part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attacks import Attack, TradesAttack
from iocane.training.recipes.base import BatchStats, Recipe, batch_stats, paired_logits
from iocane.training.recipes.pgd import pgd_text


def trades_objective(
    clean_logits: torch.Tensor, adv_logits: torch.Tensor, labels: torch.Tensor, beta: float
) -> torch.Tensor:
    """TRADES: natural cross-entropy plus beta times the batch-mean KL(p(clean) || p(adv))."""
    kl = F.kl_div(
        F.log_softmax(adv_logits, dim=1),
        F.log_softmax(clean_logits, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return F.cross_entropy(clean_logits, labels) + beta * kl


@dataclass(frozen=True)
class TradesRecipe(Recipe):
    name = "trades"

    step_size: float
    steps: int
    trades_beta: float

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            f"TRADES (Zhang et al. 2019), beta {train.trades_beta:g}, KL attack {pgd_text(train)}"
        )

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        scale = eps / self.eps  # the step keeps its ratio to eps while eps ramps up
        return TradesAttack(
            eps=eps, norm=self.norm, steps=self.steps, step_size=self.step_size * scale, seed=seed
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
        loss = trades_objective(clean_logits, adv_logits, labels, self.trades_beta)
        return loss, batch_stats(clean_logits, adv_logits, labels)
