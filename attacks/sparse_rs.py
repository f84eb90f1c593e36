"""Sparse-RS for L0: a score-based black-box sparse attack (Croce, Mueller, Hein et al. 2022,
"Sparse-RS: a versatile framework for query-efficient sparse black-box adversarial attacks",
AAAI 2022).

Threat model: at most ``eps`` pixels changed, a pixel counting once whatever its channels
(``attacks.threat.L0``), intersected with [0, 1].

Random search over sets of ``eps`` pixels whose channels take values in {0, 1}: the vertices of
the box, where a sparse perturbation of a ReLU network is at its strongest (the paper's
Section 3.1). Each sample starts from ``eps`` random pixels painted with random vertices; each
iteration swaps ``alpha * eps`` of them (at least one) for as many pixels outside the set, each
painted with a fresh random vertex, and keeps the swap when the margin loss (best other logit
minus the true logit) rises. ``alpha`` starts at ``p_init`` and halves on the paper's schedule,
Square's (``attacks.square.square_fraction``): broad moves early, single-pixel moves late.

A sample stops being queried once it is misclassified (its first fooling example is kept); each
restart costs at most ``n_queries`` queries per sample, the start included, and runs only on
the samples no earlier restart fooled. Random draws come from a generator seeded with ``seed``.

Example::

    attack = SparseRS(eps=10, n_queries=1000)
    adversarial = attack(model, images, labels)  # at most 10 pixels differ from images
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attacks.keep_best import best_over_restarts
from attacks.pgd import margin_loss
from attacks.square import square_fraction
from attacks.threat import make_generator, pixel_budget


def random_vertices(
    n: int, pixels: int, channels: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(n, pixels, channels): a random corner of [0, 1]^channels per pixel."""
    draws = torch.randint(0, 2, (n, pixels, channels), generator=generator, device=device)
    return draws.float()


def random_pixels(
    n: int,
    count: int,
    excluded: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """(n, count) distinct flat pixel indices per row, none of them True in ``excluded``
    (n, H*W): uniform without replacement, by the top scores of uniform draws."""
    scores = torch.rand(excluded.shape, generator=generator, device=excluded.device)
    scores = scores.masked_fill(excluded, -1.0)
    return scores.topk(count, dim=1).indices


def paint(images: torch.Tensor, positions: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """``images`` (n, C, H, W) with the flat pixels ``positions`` (n, k) set to ``colours``
    (n, k, C); every other pixel is the image's own, bit for bit."""
    n, channels, height, width = images.shape
    flat = images.flatten(2).clone()
    index = positions[:, None, :].expand(n, channels, positions.shape[1])
    flat.scatter_(2, index, colours.transpose(1, 2).to(images.dtype))
    return flat.view(n, channels, height, width)


@dataclass(frozen=True)
class SparseRS:
    eps: float  # pixels
    norm: str = "L0"
    n_queries: int = 1000
    p_init: float = 0.3  # the paper's alpha_init for L0
    restarts: int = 1
    seed: int = 0
    name: str = "sparse_rs"

    @torch.no_grad()
    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        if self.norm != "L0":
            raise ValueError(f"Sparse-RS (sparse_rs) supports L0, not {self.norm!r}")
        pixels = pixel_budget(self.eps)
        if pixels == 0 or len(images) == 0:
            return images.clone()
        generator = make_generator(self.seed, images.device)
        return best_over_restarts(
            images,
            margin_loss(model(images), labels),
            self.restarts,
            lambda todo: self._search(model, images[todo], labels[todo], pixels, generator),
        )

    def _search(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        pixels: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One restart on these samples: (examples, their margins)."""
        n, channels, height, width = images.shape
        area = height * width
        pixels = min(pixels, area)
        device = images.device
        none_taken = torch.zeros(n, area, dtype=torch.bool, device=device)
        positions = random_pixels(n, pixels, none_taken, generator)
        colours = random_vertices(n, pixels, channels, generator, device)
        best = paint(images, positions, colours)
        margin = margin_loss(model(best), labels)
        for iteration in range(self.n_queries - 1):
            active = (margin <= 0).nonzero().squeeze(1)
            if len(active) == 0 or pixels == area:  # every pixel already taken: nothing to swap
                break
            fraction = square_fraction(self.p_init, iteration, self.n_queries)
            swaps = min(max(round(fraction * pixels), 1), pixels, area - pixels)
            candidate_positions, candidate_colours = self._swap(
                positions[active], colours[active], swaps, area, generator
            )
            candidate = paint(images[active], candidate_positions, candidate_colours)
            candidate_margin = margin_loss(model(candidate), labels[active])
            better = candidate_margin > margin[active]
            improved = active[better]
            best[improved] = candidate[better]
            margin[improved] = candidate_margin[better]
            positions[improved] = candidate_positions[better]
            colours[improved] = candidate_colours[better]
        return best, margin

    def _swap(
        self,
        positions: torch.Tensor,
        colours: torch.Tensor,
        swaps: int,
        area: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace ``swaps`` random members of each set by pixels outside it, each with a new
        random vertex."""
        n, pixels, channels = colours.shape
        device = positions.device
        leaving = torch.rand(n, pixels, generator=generator, device=device).argsort(dim=1)
        leaving = leaving[:, :swaps]
        taken = torch.zeros(n, area, dtype=torch.bool, device=device)
        taken.scatter_(1, positions, True)
        arriving = random_pixels(n, swaps, taken, generator)
        positions = positions.clone().scatter_(1, leaving, arriving)
        fresh = random_vertices(n, swaps, channels, generator, device)
        colours = colours.clone().scatter_(1, leaving[:, :, None].expand(-1, -1, channels), fresh)
        return positions, colours
