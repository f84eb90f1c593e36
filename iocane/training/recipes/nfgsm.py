"""``nfgsm``: de Jorge et al. 2022, N-FGSM (``attacks.nfgsm``).

One signed-gradient step of eps from uniform noise in [-2 eps, 2 eps], not projected back to the
eps ball, then the ``pgd`` loss. FGSM's cost; reported to avoid catastrophic overfitting (still
watched for).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attacks import NFGSM, Attack
from iocane.training.recipes.pgd import AdversarialLossRecipe


@dataclass(frozen=True)
class NfgsmRecipe(AdversarialLossRecipe):
    name = "nfgsm"

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            "N-FGSM (de Jorge et al. 2022), one step of eps from uniform noise of "
            f"2 eps, not projected back to eps, adversarial loss weight {train.adv_weight:g}"
        )

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        return NFGSM(eps=eps, norm=self.norm, seed=seed)
