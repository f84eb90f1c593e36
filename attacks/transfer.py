"""Transfer attack: adversarial examples crafted on a surrogate model, applied to the target.

Papernot et al. 2016 ("Transferability in Machine Learning"): an attacker without the target's
weights attacks a model they own. iocane uses the natural warmup model as the surrogate. It is a
black-box attack from the target's point of view: if it beats the white-box attacks on the
target, the target's gradients are not showing the attacker the way (gradient masking).

Example::

    attack = TransferAttack(source=natural_model, attack=PGD(eps=0.1, steps=50))
    adversarial = attack(hardened_model, images, labels)  # crafted on natural_model only
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attacks.pgd import PGD


@dataclass(frozen=True)
class TransferAttack:
    source: nn.Module
    attack: PGD
    name: str = "transfer"

    @property
    def eps(self) -> float:
        return self.attack.eps

    @property
    def norm(self) -> str:
        return self.attack.norm

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        # The target model is never queried: only the surrogate's gradients are used.
        return self.attack(self.source, images, labels)
