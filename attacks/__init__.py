"""Adversarial attacks: one per module, one call shape.

Every attack is a frozen dataclass called as ``attack(model, images, labels) -> adversarial``
with images and adversarial examples in [0, 1] pixel space, shape (N, C, H, W). Attacks do not
change the model's train/eval mode: the caller decides (the evaluator and the trainer both
attack a model in eval mode). The threat model (Linf, L2) lives in ``attacks.threat``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from attacks.fgsm import FGSM
from attacks.nfgsm import NFGSM
from attacks.pgd import PGD
from attacks.threat import THREAT_MODELS, threat_model
from attacks.trades import TradesAttack


class Attack(Protocol):
    name: str
    eps: float
    norm: str

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor: ...


__all__ = ["FGSM", "NFGSM", "PGD", "THREAT_MODELS", "Attack", "TradesAttack", "threat_model"]
