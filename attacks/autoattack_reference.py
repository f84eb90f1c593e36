"""AutoAttack's reference implementation as one more attack: an independent cross-check.

``pyautoattack`` packages the code of Croce & Hein 2020 (APGD-CE, APGD-T, FAB-T and Square at
AutoAttack's budgets, version ``standard``). iocane's own attacks are written from the papers;
running the authors' implementation on the same points catches a bug or a blind spot in ours.
The ``thorough`` preset runs it; its points count in the per-sample worst case like any other
attack's, and the evaluator flags points it breaks that iocane's own attacks all missed.

Threat model: Linf or L2 ball of radius eps, intersected with [0,1].

Example::

    attack = AutoAttackReference(eps=0.1, norm="Linf")
    adversarial = attack(model, images, labels)  # (N, C, H, W) in [0, 1], within eps of images
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from pyautoattack import AutoAttack
from torch import nn


@dataclass(frozen=True)
class AutoAttackReference:
    eps: float
    norm: str = "Linf"
    version: str = "standard"
    # With version "custom": which of AutoAttack's attacks to run ("apgd-ce", "apgd-t", "fab-t",
    # "square", ...); a cheap subset makes a fast test.
    attacks: tuple[str, ...] | None = None
    seed: int = 0
    name: str = "autoattack"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        # Its own per-attack progress lines would drown the evaluator's log.
        logging.getLogger("auto-attack").setLevel(logging.WARNING)
        adversary = AutoAttack(
            model,
            norm=self.norm,
            eps=self.eps,
            version=self.version,
            attacks=list(self.attacks) if self.attacks is not None else None,
            seed=self.seed,
            device=images.device,
        )
        adversary.verbose = False
        adversarial, _ = adversary.run_standard_evaluation(images, labels, batch_size=len(images))
        return adversarial.to(images.device).clamp(0.0, 1.0)
