"""C&W L2: the Carlini & Wagner attack (2017, "Towards Evaluating the Robustness of Neural
Networks"), an optimisation attack that looks for the smallest L2 perturbation that fools.

It minimises ||x' - x||_2^2 + c * max(z_y - max_{i != y} z_i, -kappa) over x' = (tanh(w) + 1) / 2
(the change of variables keeps x' in [0, 1] without clipping) with Adam, and searches the
constant c per sample: multiplied by 10 while no fooling example was found for the sample, then
binary-searched between the largest c that failed and the smallest that fooled. The search lasts
``search_steps`` rounds; a sample still not fooled after them keeps widening c (x10 a round) up to
``max_const``, at ``EXTRA_LR_FACTOR`` times the learning rate, and one fooled in those extra
rounds gets ``TIGHTENING_ROUNDS`` more to tighten.
``minimal`` returns the smallest fooling example found and its distance, ``inf`` where none was
found with c up to ``max_const``. Called as an attack with an ``eps``, it is bounded: where the
minimal example lies beyond eps, it returns that example projected onto the L2 ball, which still
fools only if the model is not robust there.

Example::

    attack = CarliniWagnerL2(eps=0.5)
    adversarial = attack(model, images, labels)           # within L2 eps of images
    smallest, distance = attack.minimal(model, images, labels)  # distance inf where none found
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from attacks.pgd import margin_loss
from attacks.threat import threat_model

# The ceiling on c. Adam normalises each coordinate's step, so once c makes the margin term's
# gradient dwarf the distance term's (2 * (x' - x), at most 2 per pixel), a larger c only pushes
# the optimum further towards "fool at any distance". c = 1e6 makes the margin's gradient 50 times
# the distance's or more for any model whose margin moves by 1e-4 per unit of any pixel; a sample
# not fooled by then is beyond this optimiser's reach, not beyond a larger c's. From the default
# 0.1 the search reaches it in round 8: the default 5 rounds plus at most 3 widening and
# TIGHTENING_ROUNDS rounds (``max_rounds``: 10; 12 for the 9 of ``thorough``), run only on the
# samples still not fooled (or found late).
MAX_CONST = 1e6
# The learning rate of the extra rounds, as a multiple of ``learning_rate``. Adam moves each
# coordinate of w = atanh(2x - 1) by about the learning rate per step, whatever c is; a pixel at 0
# or 1 starts at |w| ~ 7.25 (the clamp below), where x barely moves until w has travelled ~5. At
# 0.01 for 100 steps (1.0 in w) such pixels stay put, and a sample whose nearest adversarial
# example needs them is not found at any c (measured: 9 of 85 digits a natural CNN gets right,
# all broken by APGD-L2 within L2 2, stay "not found" up to c = 1e6; 10x finds all 9).
EXTRA_LR_FACTOR = 10.0
# Binary-search rounds for a sample first fooled in the extra rounds: two halvings of the
# bracket [c / 10, c] take the distance most of the way down, on few samples.
TIGHTENING_ROUNDS = 2


@dataclass(frozen=True)
class CarliniWagnerL2:
    eps: float
    norm: str = "L2"
    steps: int = 100
    search_steps: int = 5
    initial_const: float = 0.1
    learning_rate: float = 0.01
    kappa: float = 0.0
    max_const: float = MAX_CONST
    name: str = "cw_l2"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        if self.norm != "L2":
            raise ValueError(f"C&W L2 is an L2 attack, not {self.norm}")
        smallest, _ = self.minimal(model, images, labels)
        delta = threat_model("L2").project(smallest - images, self.eps)
        return (images + delta).clamp(0.0, 1.0).detach()

    @property
    def max_rounds(self) -> int:
        """The bound on search rounds: the ``search_steps`` rounds or as many as it takes to widen
        c from ``initial_const`` to ``max_const``, whichever is more, then one more at the extra
        rounds' learning rate, and ``TIGHTENING_ROUNDS`` for a sample found in it."""
        widenings = math.ceil(math.log10(max(self.max_const / self.initial_const, 1.0)) - 1e-9)
        return max(self.search_steps, widenings) + 1 + TIGHTENING_ROUNDS

    def minimal(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The smallest fooling example found per sample, and its L2 distance (``inf`` where
        none was found with c up to ``max_const``)."""
        images = images.detach()
        n = len(images)
        device = images.device
        lower = torch.zeros(n, device=device)
        upper = torch.full((n,), float("inf"), device=device)
        const = torch.full((n,), min(self.initial_const, self.max_const), device=device)
        found_at = torch.full((n,), -1, dtype=torch.long, device=device)
        # Failed at max_const: in a first round (waiting for the extra rounds' learning rate),
        # or in an extra round (no further to go).
        waiting = torch.zeros(n, dtype=torch.bool, device=device)
        exhausted = torch.zeros(n, dtype=torch.bool, device=device)
        best = images.clone()
        best_distance = torch.full((n,), float("inf"), device=device)
        # atanh of the image, kept finite at 0 and 1.
        start = torch.atanh((images * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        for round_index in range(self.max_rounds):
            extra = round_index >= self.search_steps
            active = self._active(round_index, found_at, exhausted if extra else waiting)
            if not active.any():
                if extra:  # nothing can become active again
                    break
                continue
            rows = active.nonzero()[:, 0]
            succeeded = self._optimise(
                model,
                learning_rate=self.learning_rate * (EXTRA_LR_FACTOR if extra else 1.0),
                images=images[rows],
                labels=labels[rows],
                start=start[rows],
                const=const[rows],
                best=best,
                best_distance=best_distance,
                rows=rows,
            )
            fooled = torch.zeros(n, dtype=torch.bool, device=device)
            fooled[rows] = succeeded
            failed = active & ~fooled
            found_at = torch.where(fooled & (found_at < 0), round_index, found_at)
            at_ceiling = failed & torch.isinf(upper) & (const >= self.max_const)
            exhausted |= at_ceiling & extra
            waiting |= at_ceiling
            # Binary search on c: smaller where it fooled, larger where it did not.
            upper = torch.where(fooled, torch.minimum(upper, const), upper)
            lower = torch.where(failed, torch.maximum(lower, const), lower)
            widened = torch.clamp(const * 10, max=self.max_const)
            const = torch.where(torch.isinf(upper), widened, (lower + upper) / 2)
        return best, best_distance

    def _active(self, round_index: int, found_at: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """The samples this round searches, ``done`` aside (those that failed at ``max_const``):
        all of them for ``search_steps`` rounds; after them, those not yet fooled and those
        fooled in the last ``TIGHTENING_ROUNDS`` rounds."""
        if round_index < self.search_steps:
            return ~done
        unfound = (found_at < 0) & ~done
        late = (found_at >= 0) & (round_index - found_at <= TIGHTENING_ROUNDS)
        return unfound | (late & (found_at >= self.search_steps - 1))

    def _optimise(
        self,
        model: nn.Module,
        *,
        learning_rate: float,
        images: torch.Tensor,
        labels: torch.Tensor,
        start: torch.Tensor,
        const: torch.Tensor,
        best: torch.Tensor,
        best_distance: torch.Tensor,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """One round of Adam at fixed c on ``images`` (the ``rows`` of the whole batch):
        updates ``best`` and ``best_distance`` in place, returns which were fooled."""
        w = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=learning_rate)
        succeeded = torch.zeros(len(images), dtype=torch.bool, device=images.device)
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
                better = fooled & (l2 < best_distance[rows])
                best[rows[better]] = candidate.detach()[better]
                best_distance[rows[better]] = l2[better]
                succeeded |= fooled
        return succeeded
