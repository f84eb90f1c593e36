"""C&W L2: the Carlini & Wagner attack (2017, "Towards Evaluating the Robustness of Neural
Networks"), an optimisation attack that looks for the smallest L2 perturbation that fools.

It minimises ||x' - x||_2^2 + c * max(z_y - max_{i != y} z_i, -kappa) over x' = (tanh(w) + 1) / 2
(the change of variables keeps x' in [0, 1] without clipping) with Adam, and binary-searches the
constant c per sample. ``minimal`` returns the smallest fooling example found and its distance,
for the distance report. Called as an attack with an ``eps``, it is bounded: where the minimal
example lies beyond eps, it returns that example projected onto the L2 ball, which still fools
only if the model is not robust there.

Example::

    attack = CarliniWagnerL2(eps=0.5)
    adversarial = attack(model, images, labels)           # within L2 eps of images
    smallest, distance = attack.minimal(model, images, labels)  # distance inf where none found
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attacks.pgd import margin_loss
from attacks.threat import threat_model


@dataclass(frozen=True)
class CarliniWagnerL2:
    eps: float
    norm: str = "L2"
    steps: int = 100
    search_steps: int = 5
    initial_const: float = 0.1
    learning_rate: float = 0.01
    kappa: float = 0.0
    name: str = "cw_l2"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        if self.norm != "L2":
            raise ValueError(f"C&W L2 is an L2 attack, not {self.norm}")
        smallest, _ = self.minimal(model, images, labels)
        delta = threat_model("L2").project(smallest - images, self.eps)
        return (images + delta).clamp(0.0, 1.0).detach()

    def minimal(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The smallest fooling example found per sample, and its L2 distance (inf if none)."""
        images = images.detach()
        n = len(images)
        device = images.device
        lower = torch.zeros(n, device=device)
        upper = torch.full((n,), float("inf"), device=device)
        const = torch.full((n,), self.initial_const, device=device)
        best = images.clone()
        best_distance = torch.full((n,), float("inf"), device=device)
        # atanh of the image, kept finite at 0 and 1.
        start = torch.atanh((images * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        for _ in range(self.search_steps):
            w = start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.learning_rate)
            succeeded = torch.zeros(n, dtype=torch.bool, device=device)
            for _ in range(self.steps):
                with torch.enable_grad():
                    candidate = (torch.tanh(w) + 1) / 2
                    distance = (candidate - images).flatten(1).pow(2).sum(1)
                    logits = model(candidate)
                    # margin_loss > 0 means fooled; C&W minimises the true-class advantage.
                    advantage = (-margin_loss(logits, labels)).clamp(min=-self.kappa)
                    loss = (distance + const * advantage).sum()
                    # Gradient for w only: the model's parameter gradients stay untouched.
                    (w.grad,) = torch.autograd.grad(loss, w)
                optimizer.step()
                with torch.no_grad():
                    fooled = logits.argmax(1) != labels
                    l2 = distance.sqrt()
                    better = fooled & (l2 < best_distance)
                    best[better] = candidate.detach()[better]
                    best_distance[better] = l2[better]
                    succeeded |= fooled
            # Binary search on c: smaller where it fooled, larger where it did not.
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
        return best, best_distance
