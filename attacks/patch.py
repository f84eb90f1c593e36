"""Patch attacks: one square of side eps pixels, placed anywhere, its content free in [0, 1].

The digital form of a sticker (Brown et al. 2017's adversarial patch, per image): every pixel
outside the square is left bit for bit (``torch.where``), every channel inside it is free. eps
is a whole number of pixels (``attacks.threat.pixel_budget``); a side above the image's is the
whole image. Both attacks keep per sample the first example that fools the model, else the best
one found, and stop working on a sample once it is fooled; random draws come from a generator
seeded with ``seed`` on the images' device, so an attack is reproducible.

- ``PatchRS`` (black-box): Patch-RS of Croce et al. 2022 ("Sparse-RS: a versatile framework for
  query-efficient sparse black-box adversarial attacks", AAAI). A score-based random search on
  the margin loss that alternates between the patch's location (every ``location_period``-th
  iteration moves it by a random shift whose range shrinks on the schedule) and its content (a
  square inside the patch painted one colour at a vertex of the [0, 1]^C box, its area shrinking
  on Square attack's schedule from ``p_init`` of the patch). A proposal is kept when it raises
  the margin. A search settles on one place, so ``restarts`` fresh searches run on the points
  still robust. Each sample costs at most ``n_queries`` model queries per search, the start
  included.
- ``PatchPGD`` (white-box): signed-gradient ascent on the patch's pixels (clamped to [0, 1]),
  from random content, at ``locations`` candidate places per restart: on the first restart the
  windows where the clean image's input gradient has most mass, on later ones random places.

Example::

    attack = PatchRS(eps=3, n_queries=1000)  # or PatchPGD(eps=3, steps=20, locations=4)
    adversarial = attack(model, images, labels)  # one 3x3 square changed per image
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks.keep_best import BestExamples, best_over_restarts
from attacks.pgd import margin_loss, per_sample_loss
from attacks.square import square_fraction
from attacks.threat import make_generator, pixel_budget

# Patch-RS's schedule (the paper's halvings of the square's area) is counted on the paper's budget
# of 10,000 queries, not rescaled to ``n_queries``: a search with more queries then repeats a
# shorter one's queries exactly (same seed) and goes on, so with one search more queries never
# leave a point robust that fewer broke.
_SCHEDULE_QUERIES = 10_000


def patch_shape(eps: float, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of the patch of side ``eps`` on an image of ``height`` x ``width``: a side
    above the image's covers the image (its side is then still at most eps)."""
    side = pixel_budget(eps)
    return min(side, height), min(side, width)


def paste(
    images: torch.Tensor, content: torch.Tensor, top: torch.Tensor, left: torch.Tensor
) -> torch.Tensor:
    """``images`` (N, C, H, W) with each sample's ``content`` (N, C, h, w) at (``top``, ``left``)
    (N,) long; every pixel outside its patch is the image's, bit for bit. Differentiable in
    ``content``."""
    n, _, height, width = images.shape
    rows = torch.arange(height, device=images.device) - top[:, None]  # (N, H): row in the patch
    columns = torch.arange(width, device=images.device) - left[:, None]  # (N, W)
    inside_rows = (rows >= 0) & (rows < content.shape[2])
    inside_columns = (columns >= 0) & (columns < content.shape[3])
    inside = inside_rows[:, :, None] & inside_columns[:, None, :]  # (N, H, W)
    rows = rows.clamp(0, content.shape[2] - 1)[:, :, None]
    columns = columns.clamp(0, content.shape[3] - 1)[:, None, :]
    samples = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indices split by the channel slice: the result is (N, H, W, C).
    spread = content[samples, :, rows, columns].permute(0, 3, 1, 2)
    return torch.where(inside[:, None], spread, images)


def _random_places(
    count: int, room: tuple[int, int], generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` uniform (top, left) places for a patch with ``room`` (H - h, W - w) to move."""
    top = torch.randint(0, room[0] + 1, (count,), generator=generator, device=device)
    left = torch.randint(0, room[1] + 1, (count,), generator=generator, device=device)
    return top, left


def _vertex_colours(shape: tuple[int, ...], generator: torch.Generator, device) -> torch.Tensor:
    """Colours at the vertices of the [0, 1]^C box: every channel 0 or 1."""
    return torch.randint(0, 2, shape, generator=generator, device=device).float()


@dataclass(frozen=True)
class PatchRS:
    eps: float
    norm: str = "patch"
    n_queries: int = 1000
    p_init: float = 0.4  # the paper's alpha_init for untargeted image-specific patches
    location_period: int = 4  # one iteration in this many moves the patch; the others repaint
    restarts: int = 1  # fresh searches for the points still robust, n_queries each
    seed: int = 0
    name: str = "patch_rs"

    @torch.no_grad()
    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        _check_norm(self.norm, "PatchRS")
        rows, cols = patch_shape(self.eps, *images.shape[2:])
        if rows == 0 or cols == 0:
            return images.clone()
        generator = make_generator(self.seed, images.device)
        # From -inf: the first search's patched images stand unless a later one does better.
        return best_over_restarts(
            images,
            torch.full((len(images),), float("-inf"), device=images.device),
            self.restarts,
            lambda todo: self._search(model, images[todo], labels[todo], (rows, cols), generator),
        )

    def _search(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        shape: tuple[int, int],
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One run from a random place and content: the examples and their margins."""
        (n, channels, height, width), device = images.shape, images.device
        room = (height - shape[0], width - shape[1])
        top, left = _random_places(n, room, generator, device)
        content = self._initial_content((n, channels, *shape), generator, device)
        content = content.to(images.dtype)
        margin = margin_loss(model(paste(images, content, top, left)), labels)
        for iteration in range(self.n_queries - 1):
            active = (margin <= 0).nonzero().squeeze(1)
            if len(active) == 0:
                break
            fraction = square_fraction(self.p_init, iteration, _SCHEDULE_QUERIES)
            new_top, new_left, new_content = top[active], left[active], content[active]
            if max(room) > 0 and iteration % self.location_period == self.location_period - 1:
                new_top, new_left = self._moved(new_top, new_left, room, fraction, generator)
            else:
                new_content = self._repainted(new_content, fraction, generator)
            candidate = paste(images[active], new_content, new_top, new_left)
            candidate_margin = margin_loss(model(candidate), labels[active])
            better = candidate_margin > margin[active]
            kept = active[better]
            top[kept], left[kept] = new_top[better], new_left[better]
            content[kept], margin[kept] = new_content[better], candidate_margin[better]
        return paste(images, content, top, left), margin

    def _initial_content(
        self, shape: tuple[int, int, int, int], generator: torch.Generator, device
    ) -> torch.Tensor:
        """The start: the patch tiled with squares (of the first update's side) of random
        vertex colours, one colour per sample, tile and channel."""
        n, channels, rows, cols = shape
        tile = max(1, round(math.sqrt(self.p_init * rows * cols)))
        grid = (n, channels, math.ceil(rows / tile), math.ceil(cols / tile))
        colours = _vertex_colours(grid, generator, device)
        tiled = colours.repeat_interleave(tile, dim=2).repeat_interleave(tile, dim=3)
        return tiled[:, :, :rows, :cols].contiguous()

    def _repainted(
        self, content: torch.Tensor, fraction: float, generator: torch.Generator
    ) -> torch.Tensor:
        """A square of ``fraction`` of the patch's area, at one random place inside it, painted a
        random vertex colour per sample, redrawn in one channel where it repeats the colour
        already at the square's corner (a proposal that changes nothing wastes a query)."""
        n, channels, rows, cols = content.shape
        device = content.device
        side = max(1, min(round(math.sqrt(fraction * rows * cols)), rows, cols))
        top = int(torch.randint(0, rows - side + 1, (1,), generator=generator, device=device))
        left = int(torch.randint(0, cols - side + 1, (1,), generator=generator, device=device))
        colour = _vertex_colours((n, channels), generator, device).to(content.dtype)
        same = (colour == content[:, :, top, left]).all(dim=1)
        flip = torch.randint(0, channels, (n,), generator=generator, device=device)
        samples = torch.arange(n, device=device)
        flipped = colour.clone()
        flipped[samples, flip] = 1 - colour[samples, flip]
        colour = torch.where(same[:, None], flipped, colour)
        painted = content.clone()
        painted[:, :, top : top + side, left : left + side] = colour[:, :, None, None]
        return painted

    def _moved(
        self,
        top: torch.Tensor,
        left: torch.Tensor,
        room: tuple[int, int],
        fraction: float,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each patch shifted by up to ``reach`` pixels per axis, staying in the image: the reach
        starts at the whole room and shrinks like the content square's side (at least 1)."""
        reach = max(1, round(max(room) * math.sqrt(fraction / self.p_init)))
        shifts = torch.randint(
            -reach, reach + 1, (2, len(top)), generator=generator, device=top.device
        )
        return (top + shifts[0]).clamp(0, room[0]), (left + shifts[1]).clamp(0, room[1])


@dataclass(frozen=True)
class PatchPGD:
    eps: float
    norm: str = "patch"
    steps: int = 20
    restarts: int = 1
    locations: int = 4  # candidate places per restart
    step_size: float | None = None  # default 1.25 / steps: the content travels [0, 1] and back
    loss: str = "margin"  # on digits it left fewer points robust than cross-entropy
    seed: int = 0
    name: str = "patch_pgd"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        _check_norm(self.norm, "PatchPGD")
        images = images.detach()
        height, width = images.shape[2:]
        rows, cols = patch_shape(self.eps, height, width)
        if rows == 0 or cols == 0:
            return images.clone()
        generator = make_generator(self.seed, images.device)
        room = (height - rows, width - cols)
        best = BestExamples.start(images)
        for attempt in range(self.restarts * self.locations):
            todo = best.open_samples()
            if len(todo) == 0:
                break
            if attempt < self.locations:  # the first restart: the gradient's heaviest windows
                if attempt == 0:
                    ranked = _heaviest_places(
                        model, images, labels, (rows, cols), self.loss, self.locations
                    )
                top, left = ranked[0][attempt, todo], ranked[1][attempt, todo]
            else:
                top, left = _random_places(len(todo), room, generator, images.device)
            adversarial, loss, is_fooled = self._ascend(
                model, images[todo], labels[todo], (top, left), (rows, cols), generator
            )
            best.record(todo, adversarial, loss, is_fooled)
        return best.examples

    def _ascend(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        place: tuple[torch.Tensor, torch.Tensor],
        shape: tuple[int, int],
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Signed-gradient ascent on the content at fixed places, from uniform random content.
        A sample leaves the ascent at the first step its patch fools the model, with that
        example. Returns the examples, their losses and whether they fool the model."""
        step_size = self.step_size if self.step_size is not None else 1.25 / self.steps
        top, left = place
        n, channels = images.shape[:2]
        content = torch.rand((n, channels, *shape), generator=generator, device=images.device)
        content = content.to(images.dtype)
        found = torch.zeros(n, dtype=torch.bool, device=images.device)
        found_content = content.clone()
        for _ in range(self.steps):
            active = (~found).nonzero().squeeze(1)
            if len(active) == 0:
                break
            with torch.enable_grad():
                free = content[active].requires_grad_(True)
                logits = model(paste(images[active], free, top[active], left[active]))
                loss = per_sample_loss(logits, labels[active], self.loss)
                (grad,) = torch.autograd.grad(loss.sum(), free)
            with torch.no_grad():
                fools = logits.argmax(1) != labels[active]
                found[active[fools]] = True
                found_content[active[fools]] = content[active[fools]]
                content[active] = (free + step_size * grad.sign()).clamp(0.0, 1.0).detach()
        content = torch.where(found[:, None, None, None], found_content, content)
        with torch.no_grad():
            adversarial = paste(images, content, top, left)
            logits = model(adversarial)
            return (
                adversarial,
                per_sample_loss(logits, labels, self.loss),
                logits.argmax(1) != labels,
            )


def _heaviest_places(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    shape: tuple[int, int],
    loss: str,
    count: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(top, left), each (count, N): per sample, the ``count`` windows where the clean image's
    input gradient has most mass (summed over channels), heaviest first: where a change moves
    the loss most, to first order. Fewer places than ``count``: they repeat."""
    with torch.enable_grad():
        inputs = images.clone().requires_grad_(True)
        value = per_sample_loss(model(inputs), labels, loss)
        (grad,) = torch.autograd.grad(value.sum(), inputs)
    mass = grad.abs().sum(dim=1, keepdim=True)  # (N, 1, H, W)
    window_mass = F.avg_pool2d(mass, kernel_size=shape, stride=1).flatten(1)  # (N, places)
    places_per_row = images.shape[3] - shape[1] + 1
    ranked = window_mass.argsort(dim=1, descending=True, stable=True)
    index = ranked[:, torch.arange(count, device=images.device) % ranked.shape[1]].T
    return index // places_per_row, index % places_per_row


def _check_norm(norm: str, attack: str) -> None:
    if norm != "patch":
        raise ValueError(f"{attack} is a patch attack: norm must be 'patch', not {norm!r}")
