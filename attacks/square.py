"""Square attack: a score-based black-box attack (Andriushchenko et al. 2020, "Square Attack:
a query-efficient black-box adversarial attack via random search").

It never looks at gradients: it proposes random square-shaped updates at the corners of the
Linf ball and keeps those that lower the margin (true logit minus the best other logit). A
model whose gradients are masked (shattered, saturated, randomised) resists gradient attacks
but not Square; Square beating the white-box attacks is a trust flag of the evaluation.

Threat model: Linf ball of radius eps, intersected with [0,1]. (The L2 variant is not built
yet; asking for it raises.) The square's share of the image starts at ``p_init`` and halves on
the paper's schedule. Samples already misclassified are not queried again.

Example::

    attack = SquareAttack(eps=0.1, n_queries=1000)
    adversarial = attack(model, images, labels)  # (N, C, H, W) in [0, 1], within eps of images
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from attacks.pgd import margin_loss
from attacks.threat import make_generator

# Iterations (out of 10,000) after which the square's area halves, as in the paper's code.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, iteration: int, n_queries: int) -> float:
    """The share of the image a square covers at ``iteration`` of ``n_queries``."""
    scaled = int(iteration / n_queries * 10_000)
    halvings = sum(scaled > mark for mark in _HALVINGS)
    return p_init / 2**halvings


def _random_signs(shape: tuple[int, ...], generator: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1


@dataclass(frozen=True)
class SquareAttack:
    eps: float
    norm: str = "Linf"
    n_queries: int = 1000
    p_init: float = 0.8
    seed: int = 0
    name: str = "square"

    @torch.no_grad()
    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        if self.norm != "Linf":
            raise ValueError(f"the Square attack supports Linf only, not {self.norm}")
        generator = make_generator(self.seed, images.device)
        n, channels, height, width = images.shape
        device = images.device
        # Start from vertical stripes at the ball's corners: one sign per channel and column.
        stripes = self.eps * _random_signs((n, channels, 1, width), generator, device)
        best = (images + stripes).clamp(0.0, 1.0)
        margin = margin_loss(model(best), labels)  # > 0: the model is fooled
        for iteration in range(self.n_queries - 1):
            active = (margin <= 0).nonzero().squeeze(1)
            if len(active) == 0:
                break
            fraction = square_fraction(self.p_init, iteration, self.n_queries)
            side = max(1, min(round(math.sqrt(fraction * height * width)), min(height, width) - 1))
            top = int(torch.randint(0, height - side + 1, (1,), generator=generator, device=device))
            left = int(torch.randint(0, width - side + 1, (1,), generator=generator, device=device))
            delta = best[active] - images[active]
            signs = self.eps * _random_signs((len(active), channels, 1, 1), generator, device)
            delta[:, :, top : top + side, left : left + side] = signs
            candidate = (images[active] + delta).clamp(0.0, 1.0)
            candidate_margin = margin_loss(model(candidate), labels[active])
            better = candidate_margin > margin[active]
            best[active[better]] = candidate[better]
            margin[active[better]] = candidate_margin[better]
        return best
