"""``fgsm_rs``: Wong et al. 2020, "Fast is better than free".

One signed-gradient step of 1.25 * eps from a uniform random start, then the ``pgd`` loss.
Cheap, and prone to catastrophic overfitting, which ``fit`` watches for every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attacks import PGD, Attack
from iocane.training.recipes.pgd import AdversarialLossRecipe

FGSM_RS_STEP = 1.25  # Wong et al.: the step is 1.25 eps


@dataclass(frozen=True)
class FgsmRsRecipe(AdversarialLossRecipe):
    name = "fgsm_rs"

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            "FGSM with random start (Wong et al. 2020), one step of 1.25 eps, "
            f"adversarial loss weight {train.adv_weight:g}"
        )

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        return PGD(eps=eps, norm=self.norm, steps=1, step_size=FGSM_RS_STEP * eps, seed=seed)
