"""TRADES' inner maximisation (Zhang et al. 2019), the training attack of ``train.method: trades``.

From a small Gaussian start (0.001 times a standard normal draw, projected to the eps ball and
clipped to [0, 1]), ``steps`` ascent steps of ``step_size`` on KL(p(clean) || p(x')), each
projected back to the eps ball and clipped to [0, 1]. Unlike PGD it needs no labels: it pushes
the prediction away from the clean one, whatever the class.

Not an evaluation attack: it maximises the TRADES objective's KL term, not the classification
error.

Example::

    attack = TradesAttack(eps=0.1, norm="Linf", steps=10, step_size=0.025, seed=3)
    adversarial = attack(model, images, labels)  # in [0, 1], within eps of images
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks.threat import make_generator, threat_model

START_SCALE = 0.001  # Zhang et al.'s released code: the start is 0.001 * N(0, 1)


@dataclass(frozen=True)
class TradesAttack:
    """TRADES' inner maximisation: ascend KL(p(clean) || p(x')) within the eps ball."""

    eps: float
    norm: str = "Linf"
    steps: int = 10
    step_size: float = 0.01
    seed: int = 0
    name: str = "trades_kl"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        threat = threat_model(self.norm)
        generator = make_generator(self.seed, images.device)
        images = images.detach()
        with torch.no_grad():
            clean_log_probs = F.log_softmax(model(images), dim=1)
        start = START_SCALE * torch.randn(images.shape, generator=generator, device=images.device)
        delta = (images + threat.project(start, self.eps)).clamp(0, 1) - images
        for _ in range(self.steps):
            with torch.enable_grad():
                delta.requires_grad_(True)
                adv_log_probs = F.log_softmax(model(images + delta), dim=1)
                kl = F.kl_div(adv_log_probs, clean_log_probs, reduction="sum", log_target=True)
                (grad,) = torch.autograd.grad(kl, delta)
            with torch.no_grad():
                delta = threat.project(delta + threat.step(grad, self.step_size), self.eps)
                delta = (images + delta).clamp(0, 1) - images
        return (images + delta).detach()
