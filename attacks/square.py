"""Square attack: a score-based black-box attack (Andriushchenko et al. 2020, "Square Attack:
a query-efficient black-box adversarial attack via random search").

It never looks at gradients: it proposes random square-shaped updates of the perturbation and
keeps those that raise the margin (best other logit minus the true logit). A model whose
gradients are masked (shattered, saturated, randomised) resists gradient attacks but not
Square; Square beating the white-box attacks is a trust flag of the evaluation.

Threat model: Linf or L2 ball of radius eps, intersected with [0,1].

- Linf: start from vertical stripes at the ball's corners; each update paints one square
  window (shared by every channel) with a random corner, one sign per channel.
- L2 (the paper's Section 3.2): start from a grid of tiles, each holding a "meta-pseudo-Gaussian"
  (two centred blobs of opposite sign, see ``window_pattern``) with one random sign per
  channel, scaled onto the sphere of radius eps. Each update picks two square windows W1 and W2,
  empties W2, and refills W1 with the old direction of W1 plus a fresh signed pattern, carrying
  all of W1 and W2's mass (plus any budget the [0,1] clipping left unused) so the perturbation
  stays on the sphere. The update reads the perturbation after clipping, i.e. the one the
  model actually saw. Windows are odd-sided and at least 3 pixels wide (capped by the image).

The square's share of the image starts at ``p_init`` and halves on the paper's schedule (both
norms). Samples already misclassified are not queried again. Each sample costs at most
``n_queries`` model queries, the start included. Random draws come from a generator seeded with
``seed``: the attack is reproducible.

Example::

    attack = SquareAttack(eps=0.1, n_queries=1000)  # or eps=0.5, norm="L2"
    adversarial = attack(model, images, labels)  # (N, C, H, W) in [0, 1], within eps of images
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from attacks.pgd import margin_loss
from attacks.threat import make_generator, threat_model

# Iterations (out of 10,000) after which the square's area halves, as in the paper's code.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# The L2 start tiles the image on a grid of about this many tiles a side.
_L2_GRID = 5
_TINY = 1e-12  # guards divisions by a zero perturbation norm

# (iteration, images, current best) of the samples still correctly classified -> candidates.
Proposal = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def square_fraction(p_init: float, iteration: int, n_queries: int) -> float:
    """The share of the image a square covers at ``iteration`` of ``n_queries``."""
    scaled = int(iteration / n_queries * 10_000)
    halvings = sum(scaled > mark for mark in _HALVINGS)
    return p_init / 2**halvings


def l2_window_side(fraction: float, height: int, width: int) -> int:
    """The L2 update's window side: covers ``fraction`` of the image, odd, at least 3 (so
    the pattern has room for both blobs), at most the image's shorter side."""
    side = max(3, round(math.sqrt(fraction * height * width)))
    if side % 2 == 0:
        side += 1
    return min(side, height, width)


def _centred_rings(rows: int, cols: int) -> torch.Tensor:
    """A (rows, cols) block of concentric square rings around the block's centre pixel: a
    pixel at Chebyshev distance d from the centre gets sum_{k=d}^{n} 1 / (k + 1)^2, with
    n = max(rows, cols) // 2, so the block peaks in the middle and decays to its edge."""
    n = max(rows, cols) // 2
    ring_weights = 1.0 / torch.arange(1, n + 2, dtype=torch.float64) ** 2
    tail_sums = ring_weights.flip(0).cumsum(0).flip(0)  # tail_sums[d] = sum over k >= d
    row_distance = (torch.arange(rows) - rows // 2).abs()
    col_distance = (torch.arange(cols) - cols // 2).abs()
    distance = torch.maximum(row_distance[:, None], col_distance[None, :])
    return tail_sums[distance]


def window_pattern(side: int, transpose: bool = False) -> torch.Tensor:
    """The paper's meta-pseudo-Gaussian on a (side, side) window, unit L2 norm: a positive
    ring blob on the top half and a negative one on the bottom half (left and right halves
    when ``transpose``), the two blobs of equal energy even when ``side`` is odd and the
    halves differ by a row. Float64 on the CPU; callers move it."""
    top = side // 2
    halves = [_centred_rings(top, side), -_centred_rings(side - top, side)]
    pattern = torch.cat([half / half.norm() for half in halves if half.numel()])
    pattern = pattern / pattern.norm()
    return pattern.T if transpose else pattern


def _random_signs(shape: tuple[int, ...], generator: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1


def _random_int(high: int, generator: torch.Generator, device) -> int:
    """Uniform in [0, high)."""
    return int(torch.randint(0, high, (1,), generator=generator, device=device))


def _per_sample_l2(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (tensor.dim() - 1)))


def _window_l2(tensor: torch.Tensor) -> torch.Tensor:
    """L2 norm per sample and channel over the spatial dims: (N, C, 1, 1)."""
    return tensor.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()


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
        if self.norm not in ("Linf", "L2"):
            raise ValueError(f"the Square attack supports Linf and L2, not {self.norm!r}")
        generator = make_generator(self.seed, images.device)
        if self.norm == "Linf":
            start, propose = self._linf(images, generator)
            return self._search(model, images, labels, start, propose)
        start, propose = self._l2(images, generator)
        best = self._search(model, images, labels, start, propose)
        # The update keeps ||delta|| = eps up to float error and clipping only shrinks it;
        # project and clip anyway so the contract holds exactly.
        delta = threat_model("L2").project(best - images, self.eps)
        return (images + delta).clamp(0.0, 1.0)

    def _search(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        start: torch.Tensor,
        propose: Proposal,
    ) -> torch.Tensor:
        """Random search: keep each sample's proposal when it raises the margin; stop
        querying a sample once it is misclassified."""
        best = start
        margin = margin_loss(model(best), labels)  # > 0: the model is fooled
        for iteration in range(self.n_queries - 1):
            active = (margin <= 0).nonzero().squeeze(1)
            if len(active) == 0:
                break
            candidate = propose(iteration, images[active], best[active])
            candidate_margin = margin_loss(model(candidate), labels[active])
            better = candidate_margin > margin[active]
            best[active[better]] = candidate[better]
            margin[active[better]] = candidate_margin[better]
        return best

    def _linf(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, Proposal]:
        n, channels, height, width = images.shape
        device = images.device
        # Start from vertical stripes at the ball's corners: one sign per channel and column.
        stripes = self.eps * _random_signs((n, channels, 1, width), generator, device)
        start = (images + stripes).clamp(0.0, 1.0)

        def propose(iteration: int, clean: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
            fraction = square_fraction(self.p_init, iteration, self.n_queries)
            side = max(1, min(round(math.sqrt(fraction * height * width)), min(height, width) - 1))
            top = _random_int(height - side + 1, generator, device)
            left = _random_int(width - side + 1, generator, device)
            delta = best - clean
            signs = self.eps * _random_signs((len(clean), channels, 1, 1), generator, device)
            delta[:, :, top : top + side, left : left + side] = signs
            return (clean + delta).clamp(0.0, 1.0)

        return start, propose

    def _l2(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, Proposal]:
        n, channels, height, width = images.shape
        device, dtype = images.device, images.dtype
        patterns: dict[tuple[int, bool], torch.Tensor] = {}

        def pattern_of(side: int, transpose: bool) -> torch.Tensor:
            if (side, transpose) not in patterns:
                patterns[side, transpose] = window_pattern(side, transpose).to(device, dtype)
            return patterns[side, transpose]

        # Start: square tiles of side min(H, W) // 5 (at least one pixel) on a grid centred in
        # the image, each a pattern with a random orientation and one random sign per channel.
        tile = max(1, min(height, width) // _L2_GRID)
        rows, cols = height // tile, width // tile
        top0, left0 = (height - rows * tile) // 2, (width - cols * tile) // 2
        delta = torch.zeros_like(images)
        for row in range(rows):
            for col in range(cols):
                transpose = bool(_random_int(2, generator, device))
                pattern = pattern_of(tile, transpose)
                signs = _random_signs((n, channels, 1, 1), generator, device).to(dtype)
                top, left = top0 + row * tile, left0 + col * tile
                delta[:, :, top : top + tile, left : left + tile] = signs * pattern
        start = (images + self.eps * delta / (_per_sample_l2(delta) + _TINY)).clamp(0.0, 1.0)

        def propose(iteration: int, clean: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
            fraction = square_fraction(self.p_init, iteration, self.n_queries)
            side = l2_window_side(fraction, height, width)
            top1 = _random_int(height - side + 1, generator, device)
            left1 = _random_int(width - side + 1, generator, device)
            top2 = _random_int(height - side + 1, generator, device)
            left2 = _random_int(width - side + 1, generator, device)
            window1 = (..., slice(top1, top1 + side), slice(left1, left1 + side))
            window2 = (..., slice(top2, top2 + side), slice(left2, left2 + side))
            transpose = bool(_random_int(2, generator, device))
            pattern = pattern_of(side, transpose)
            signs = _random_signs((len(clean), channels, 1, 1), generator, device).to(dtype)

            delta = best - clean  # the perturbation after clipping, norm <= eps
            # Mass to spend in W1, per channel: what W1 and W2 hold now, plus an equal share of
            # the budget left unused (by clipping), so the result has norm eps again.
            both = torch.zeros(height, width, dtype=torch.bool, device=device)
            both[window1] = True
            both[window2] = True
            unused = (self.eps**2 - _per_sample_l2(delta) ** 2).clamp(min=0.0) / channels
            mass = (unused + _window_l2(delta * both) ** 2).sqrt()
            # New W1 direction: its old direction plus the fresh signed pattern.
            old = delta[window1]
            direction = old / (_window_l2(old) + _TINY) + signs * pattern
            delta[window2] = 0.0
            delta[window1] = direction / (_window_l2(direction) + _TINY) * mass
            # Back onto the sphere (float drift, or a direction that cancelled out), then clip.
            delta = self.eps * delta / (_per_sample_l2(delta) + _TINY)
            return (clean + delta).clamp(0.0, 1.0)

        return start, propose
