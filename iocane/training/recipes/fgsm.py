"""``fgsm``: Goodfellow et al. 2015, the single-step baseline of Madry et al.'s capacity study.

One signed-gradient step of eps from the clean image, then the ``pgd`` loss. Known to overfit
to its own attack (label leaking, catastrophic overfitting); kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attacks import PGD, Attack
from iocane.training.recipes.pgd import AdversarialLossRecipe


@dataclass(frozen=True)
class FgsmRecipe(AdversarialLossRecipe):
    name = "fgsm"

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            "FGSM (Goodfellow et al. 2015), one step of eps from the clean image, "
            f"adversarial loss weight {train.adv_weight:g}"
        )

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        return PGD(eps=eps, norm=self.norm, steps=1, step_size=eps, random_start=False)
