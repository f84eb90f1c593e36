"""N-FGSM: noisy FGSM without projection (de Jorge et al. 2022, "Make Some Noise: Reliable and
Efficient Single-Step Adversarial Training"), the training attack of ``train.method: nfgsm``.

Each image gets noise drawn uniformly from the ball of radius ``noise * eps`` (Linf: every
pixel from [-noise*eps, noise*eps]), then ONE ascent step of size ``step * eps`` from the noisy
point: the gradient's sign for Linf. The result is NOT projected back to the eps ball, only
clipped to the valid image range [0, 1]; in Linf the perturbation can reach
``(noise + step) * eps`` (3 eps at the paper's k = 2). The paper's finding is that the stronger
noise and the missing projection avoid catastrophic overfitting at FGSM's cost (one forward and
one backward pass per example), matching GradAlign without its double backpropagation.

L2: the paper studies Linf only. Here the direct analogue runs (noise uniform in the L2 ball of
radius ``noise * eps``, one step of ``step * eps`` along the normalised gradient, no projection,
clip to [0, 1]); it is an extrapolation of the recipe, not a result of the paper.

Not an evaluation attack: its examples lie outside the threat model's eps ball by design.

Example::

    attack = NFGSM(eps=0.1, norm="Linf", seed=3)
    adversarial = attack(model, images, labels)  # in [0, 1], within 3 eps (Linf) of images
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks.threat import make_generator, threat_model

# de Jorge et al. 2022, Section 4 and their released code: noise magnitude k = 2 (times eps)
# and a step of alpha = 1 (times eps) are the defaults used throughout the paper's experiments.
NFGSM_NOISE = 2.0
NFGSM_STEP = 1.0


@dataclass(frozen=True)
class NFGSM:
    eps: float
    norm: str = "Linf"
    noise: float = NFGSM_NOISE  # the noise radius, in units of eps
    step: float = NFGSM_STEP  # the step, in units of eps
    seed: int = 0
    name: str = "nfgsm"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        threat = threat_model(self.norm)
        generator = make_generator(self.seed, images.device)
        images = images.detach()
        noise = threat.random_start(images.shape, self.noise * self.eps, generator, images.device)
        noisy = (images + noise).clamp(0.0, 1.0)
        # enable_grad: callers often run under no_grad; the attack needs input gradients.
        with torch.enable_grad():
            inputs = noisy.clone().requires_grad_(True)
            loss = F.cross_entropy(model(inputs), labels, reduction="sum")
            # Gradient for the input only: no parameter gradients are accumulated.
            (grad,) = torch.autograd.grad(loss, inputs)
        # No projection to the eps ball (the paper's point): only the valid image range.
        return (noisy + threat.step(grad, self.step * self.eps)).clamp(0.0, 1.0).detach()
