"""sPGD: sparse PGD, a white-box L0 attack (Zhong, Liu, Liu 2024, "Towards Efficient Training
and Evaluation of Robust Models against l0 Bounded Adversarial Perturbations", ICML 2024).

Threat model: at most ``eps`` pixels changed, a pixel counting once whatever its channels
(``attacks.threat.L0``), intersected with [0, 1].

The perturbation is factored as magnitude times mask, delta = p * m: ``p`` (N, C, H, W) is dense
and kept in the box (images + p in [0, 1]); the mask m (N, 1, H, W) is the top ``eps`` pixels of
a continuous score ``m_score``, which the attack also climbs. Each step ascends the
cross-entropy: p by a signed step of ``step_size`` on its gradient where the mask is on, the
score by a normalised step of ``mask_step * sqrt(H * W)`` on its gradient through a sigmoid
(``m = sigmoid(score)``). The loss is read at the sparse point images + p * top_k(mask) (the
"sparse gradient"); when it has not risen for ``patience`` steps the attack switches to the
dense, unprojected point images + p * sigmoid(score), whose gradient reaches pixels the mask
has not yet taken, and back again, and after two fruitless switches it re-draws p and the score
(the paper's escape from the top-k operator's zero gradient and its random restarts).

Every step's sparse point is checked: a sample stops at its first fooling example (early stop);
otherwise the attack keeps its highest-margin one. ``restarts`` run from fresh random draws on
the samples not yet fooled. Every example passes through ``L0.project`` (at most ``eps``
pixels, in [0, 1], untouched pixels bit-identical). Random draws come from a generator seeded
with ``seed``.

Example::

    attack = SparsePGD(eps=10, steps=100, restarts=2)
    adversarial = attack(model, images, labels)  # at most 10 pixels differ from images
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks.keep_best import best_over_restarts
from attacks.pgd import margin_loss
from attacks.threat import L0, make_generator, pixel_budget, top_pixels

_L0 = L0()
_TINY = 1e-12  # guards the score step's division by a zero gradient


@dataclass
class _State:
    """One restart's variables for the samples still attacked."""

    magnitude: torch.Tensor  # p, (n, C, H, W), images + p in [0, 1]
    score: torch.Tensor  # m_score, (n, 1, H, W)
    best_loss: torch.Tensor  # (n,) the highest sparse cross-entropy so far
    stalled: torch.Tensor  # (n,) steps since best_loss last rose
    dense: torch.Tensor  # (n,) bool: this sample follows the unprojected gradient
    switches: torch.Tensor  # (n,) fruitless switches since the last rise

    def take(self, keep: torch.Tensor) -> _State:
        return _State(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class SparsePGD:
    eps: float  # pixels
    norm: str = "L0"
    steps: int = 100
    restarts: int = 1
    step_size: float = 0.25  # the paper's alpha, on p
    mask_step: float = 0.25  # the paper's beta, times sqrt(H * W), on the mask score
    patience: int = 3
    seed: int = 0
    name: str = "pgd_l0"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        if self.norm != "L0":
            raise ValueError(f"sparse PGD (pgd_l0) supports L0, not {self.norm!r}")
        pixels = pixel_budget(self.eps)
        if pixels == 0 or len(images) == 0:
            return images.clone()
        generator = make_generator(self.seed, images.device)
        with torch.no_grad():
            margin = margin_loss(model(images), labels)
        return best_over_restarts(
            images,
            margin,
            self.restarts,
            lambda todo: self._restart(model, images[todo], labels[todo], pixels, generator),
        )

    def _draw(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """A random start: p uniform in the box, the score standard normal."""
        n, _, height, width = images.shape
        device = images.device
        target = torch.rand(images.shape, generator=generator, device=device)
        score = torch.randn((n, 1, height, width), generator=generator, device=device)
        return target - images, score

    def _restart(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        pixels: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One restart: (each sample's first fooling example, else its highest-margin one; the
        margins)."""
        n = len(images)
        magnitude, score = self._draw(images, generator)
        zeros = torch.zeros(n, device=images.device)
        state = _State(magnitude, score, zeros - math.inf, zeros.long(), zeros.bool(), zeros.long())
        best, best_margin = images.clone(), zeros - math.inf
        active = torch.arange(n, device=images.device)  # state rows <-> these samples
        for _ in range(self.steps):
            sparse_point, loss, margin, grads = self._step(
                model, images[active], labels[active], state, pixels
            )
            better = margin > best_margin[active]
            best[active[better]] = sparse_point[better]
            best_margin[active[better]] = margin[better]
            self._update(state, images[active], loss, grads, generator)
            still = best_margin[active] <= 0  # early stop: fooled samples leave
            if not still.any():
                break
            active, state = active[still], state.take(still)
        return best, best_margin

    def _step(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        state: _State,
        pixels: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The sparse point and its loss and margin, and the gradients of the loss at the
        sparse or the dense point (per sample) with respect to p and the score."""
        hard = top_pixels(state.score[:, 0], pixels)[:, None]
        with torch.enable_grad():  # the caller may hold no_grad (an evaluation)
            magnitude = state.magnitude.detach().requires_grad_(True)
            score = state.score.detach().requires_grad_(True)
            soft = torch.sigmoid(score)
            # Straight through: the sparse point's forward pass, the sigmoid's gradient.
            sparse_mask = hard.to(soft.dtype) + soft - soft.detach()
            mask = torch.where(state.dense[:, None, None, None], soft, sparse_mask)
            logits = model(images + magnitude * mask)
            loss = F.cross_entropy(logits, labels, reduction="none")
            grads = torch.autograd.grad(loss.sum(), (magnitude, score))
        with torch.no_grad():
            delta = _L0.project(torch.where(hard, state.magnitude, 0.0), pixels, images)
            # Clamped again: images + (clipped - images) can round a hair past 0 or 1.
            sparse_point = torch.where(delta != 0, (images + delta).clamp(0.0, 1.0), images)
            sparse_logits = model(sparse_point)
        sparse_loss = F.cross_entropy(sparse_logits, labels, reduction="none")
        return sparse_point, sparse_loss, margin_loss(sparse_logits, labels), grads

    @torch.no_grad()
    def _update(
        self,
        state: _State,
        images: torch.Tensor,
        loss: torch.Tensor,
        grads: tuple[torch.Tensor, torch.Tensor],
        generator: torch.Generator,
    ) -> None:
        """Ascend p and the score; switch gradients, or re-draw, where the loss stalls."""
        grad_magnitude, grad_score = grads
        height, width = images.shape[2:]
        magnitude = state.magnitude + self.step_size * grad_magnitude.sign()
        state.magnitude = (images + magnitude).clamp(0.0, 1.0) - images
        norm = grad_score.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        step = self.mask_step * math.sqrt(height * width)
        state.score = state.score + step * grad_score / (norm + _TINY)

        rose = loss > state.best_loss
        state.best_loss = torch.maximum(state.best_loss, loss)
        state.stalled = torch.where(rose, 0, state.stalled + 1)
        state.switches = torch.where(rose, 0, state.switches)
        switch = state.stalled >= self.patience
        state.dense = state.dense ^ switch
        state.switches = state.switches + switch.long()
        state.stalled = torch.where(switch, 0, state.stalled)
        redraw = state.switches > 2
        if redraw.any():
            fresh_magnitude, fresh_score = self._draw(images, generator)
            state.magnitude = torch.where(
                redraw[:, None, None, None], fresh_magnitude, state.magnitude
            )
            state.score = torch.where(redraw[:, None, None, None], fresh_score, state.score)
            state.switches = torch.where(redraw, 0, state.switches)
            state.best_loss = torch.where(redraw, -math.inf, state.best_loss)
