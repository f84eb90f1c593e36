"""``multi``: alternates the threat models batch by batch (diversified training attacks).

``train.norm`` at ``train.eps`` on even batches, the other norm at ``multi_other_eps`` on odd
ones, each with PGD and the ``pgd`` loss. The alternation is the state it carries between
batches, kept as the batch's index: a resumed epoch picks it up where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from attacks import PGD, Attack
from iocane.training.recipes.base import other_norm
from iocane.training.recipes.pgd import PgdRecipe, pgd_text

OTHER_STEP = 2.5  # the other norm's step is Madry's rule of thumb, 2.5 * eps / steps


@dataclass(frozen=True)
class MultiRecipe(PgdRecipe):
    name = "multi"

    multi_other_eps: float

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            f"multi-threat PGD alternating {train.norm} eps {train.eps:g} with "
            f"{other_norm(train.norm)} eps {train.multi_other_eps:g}, {pgd_text(train)}"
        )

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        if batch % 2 == 0:
            return super().attack(eps, seed, batch)
        other = self.multi_other_eps * (eps / self.eps)  # ramps with eps
        return PGD(
            eps=other,
            norm=other_norm(self.norm),
            steps=self.steps,
            step_size=OTHER_STEP * other / self.steps,
            random_start=self.random_start,
            seed=seed,
        )
