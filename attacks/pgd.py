"""PGD: projected gradient descent on the loss, with random restarts (Madry et al. 2018,
"Towards Deep Learning Models Resistant to Adversarial Attacks").

Threat model: Linf or L2 ball of radius eps around each image, intersected with [0,1].
Each restart starts uniformly in the ball (or at the image when ``random_start`` is false) and
takes ``steps`` ascent steps of ``step_size``, projecting back after each. Across restarts the
attack keeps, per sample, the first perturbation that fools the model, else the one with the
highest loss; later restarts run only on samples not yet fooled.

Arguments: eps, norm ("Linf" | "L2"), steps, step_size (default 2.5 * eps / steps, Madry's
rule), restarts, random_start, loss ("ce" cross-entropy, or "margin": the C&W logit margin),
seed (restart noise is drawn from a generator seeded with it: reproducible).

Example::

    attack = PGD(eps=0.1, norm="Linf", steps=20, restarts=5)
    adversarial = attack(model, images, labels)  # (N, C, H, W) in [0, 1], within eps of images
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks.threat import ThreatModel, make_generator, threat_model


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample C&W margin: best other logit minus the true logit (> 0 means fooled)."""
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, labels[:, None], float("-inf"))
    return others.amax(dim=1) - true_logit


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "ce":
        return F.cross_entropy(logits, labels, reduction="none")
    if loss == "margin":
        return margin_loss(logits, labels)
    raise ValueError(f"unknown PGD loss {loss!r}; known: ce, margin")


@dataclass(frozen=True)
class PGD:
    eps: float
    norm: str = "Linf"
    steps: int = 10
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    loss: str = "ce"
    seed: int = 0
    name: str = "pgd"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        threat = threat_model(self.norm)
        step_size = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        generator = make_generator(self.seed, images.device)
        images = images.detach()
        if self.restarts == 1:
            # One run needs no bookkeeping: no per-sample selection, so no host sync (training
            # calls this every batch) and no extra forward pass to score the result.
            adversarial, _, _ = self._one_run(
                model, images, labels, threat, step_size, generator, score=False
            )
            return adversarial
        best = images.clone()
        best_loss = torch.full((len(images),), float("-inf"), device=images.device)
        fooled = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        for _ in range(self.restarts):
            todo = (~fooled).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            adversarial, loss, is_fooled = self._one_run(
                model, images[todo], labels[todo], threat, step_size, generator
            )
            # Keep a fooling example once found; otherwise keep the highest-loss one.
            better = is_fooled | (loss > best_loss[todo])
            best[todo[better]] = adversarial[better]
            best_loss[todo[better]] = loss[better]
            fooled[todo[is_fooled]] = True
        return best

    def input_gradient(
        self, model: nn.Module, images: torch.Tensor, delta: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """The gradient of the summed per-sample loss at ``images + delta`` w.r.t. ``delta``
        (adaptive attacks override it: EOT averages it, BPDA approximates it)."""
        # enable_grad: callers often evaluate under no_grad; the attack needs input gradients.
        with torch.enable_grad():
            delta = delta.detach().requires_grad_(True)
            loss = per_sample_loss(model(images + delta), labels, self.loss)
            # Gradient for the input only: no parameter gradients are computed or stored.
            (grad,) = torch.autograd.grad(loss.sum(), delta)
        return grad

    def _one_run(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        threat: ThreatModel,
        step_size: float,
        generator: torch.Generator,
        score: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.random_start:
            delta = threat.random_start(images.shape, self.eps, generator, images.device)
            delta = (images + delta).clamp(0.0, 1.0) - images
        else:
            delta = torch.zeros_like(images)
        for _ in range(self.steps):
            grad = self.input_gradient(model, images, delta, labels)
            with torch.no_grad():
                delta = threat.project(delta + threat.step(grad, step_size), self.eps)
                delta = (images + delta).clamp(0.0, 1.0) - images
        adversarial = (images + delta).detach()
        if not score:
            return adversarial, None, None
        with torch.no_grad():
            logits = model(adversarial)
            final_loss = per_sample_loss(logits, labels, self.loss)
            is_fooled = logits.argmax(dim=1) != labels
        return adversarial, final_loss, is_fooled
