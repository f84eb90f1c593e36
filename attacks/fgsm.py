"""FGSM: the fast gradient sign method (Goodfellow et al. 2015, "Explaining and Harnessing
Adversarial Examples").

One step of size eps along the loss gradient's steepest-ascent direction for the norm
(sign for Linf, normalised gradient for L2). Cheap and weak: iterative attacks must beat it,
which is one of the evaluation's trust checks.

Example::

    attack = FGSM(eps=0.1, norm="Linf")
    adversarial = attack(model, images, labels)  # images, adversarial in [0, 1], shape (N, C, H, W)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks.threat import threat_model


@dataclass(frozen=True)
class FGSM:
    eps: float
    norm: str = "Linf"
    name: str = "fgsm"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        threat = threat_model(self.norm)
        images = images.detach()
        # enable_grad: callers often evaluate under no_grad; the attack needs input gradients.
        with torch.enable_grad():
            inputs = images.clone().requires_grad_(True)
            loss = F.cross_entropy(model(inputs), labels, reduction="sum")
            # Gradient for the input only: no parameter gradients are accumulated.
            (grad,) = torch.autograd.grad(loss, inputs)
        delta = threat.project(threat.step(grad, self.eps), self.eps)
        return (images + delta).clamp(0.0, 1.0).detach()
