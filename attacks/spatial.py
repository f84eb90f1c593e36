"""Spatial threat: the worst case over a grid of rotations and translations (Engstrom et al.
2019, "Exploring the Landscape of Spatial Robustness").

Threat model: the image turned by an angle in [-rotate, rotate] degrees about its centre and
moved by whole or fractional pixels in [-translate, translate] along each axis, resampled
bilinearly with zeros where the frame uncovers (the paper's padding). The grid is the paper's
exhaustive search: ``rotations`` angles evenly spaced in [-rotate, rotate] times
``translations`` shifts per axis evenly spaced in [-translate, translate] (odd counts hold the
identity; a count of one is the centre, 0). The grid is tried mildest first (by the larger of the
angle's and the shift's share of its range), so a sample keeps the mildest transform that fools
the model; a sample no transform fools keeps its highest-loss one. Samples already fooled are not
tried again. All grid points of a chunk of samples go through the model in one batch.

It has no random part: ``seed`` is kept for the attack call shape. It does not change the
model's train/eval mode nor leave gradients (the search only runs forward passes).

Example::

    attack = SpatialGrid(rotate=30, translate=3, rotations=31, translations=5)  # the paper's grid
    worst = attack(model, images, labels)  # (N, C, H, W) in [0, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks.keep_best import BestExamples

# Images per forward pass of the search (samples x grid points).
_IMAGES_PER_PASS = 2048


def check_grid(rotate: float, translate: float, rotations: int, translations: int) -> None:
    """A ValueError naming the first field that does not make a grid."""
    for field_name, count in (("rotations", rotations), ("translations", translations)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"spatial grid: {field_name} must be an integer >= 1, got {count!r}")
    for field_name, limit in (("rotate", rotate), ("translate", translate)):
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int | float)
            or not 0 <= limit < math.inf
        ):
            raise ValueError(f"spatial grid: {field_name} must be a number >= 0, got {limit!r}")


def grid_points(rotate: float, translate: float, rotations: int, translations: int) -> torch.Tensor:
    """The (G, 3) float64 grid of (angle in degrees, right shift, down shift in pixels), mildest
    first; ties keep the order angle, then right, then down."""
    check_grid(rotate, translate, rotations, translations)
    angles = _even(rotate, rotations)
    shifts = _even(translate, translations)
    points = torch.cartesian_prod(angles, shifts, shifts).reshape(-1, 3)
    mildness = torch.maximum(
        points[:, 0].abs() / max(rotate, 1e-12),
        points[:, 1:].abs().amax(dim=1) / max(translate, 1e-12),
    )
    order = torch.sort(mildness, stable=True).indices
    return points[order]


def _even(limit: float, count: int) -> torch.Tensor:
    if count == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(-limit, limit, count, dtype=torch.float64)


def affine_matrices(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(M, 2, 3) ``affine_grid`` matrices of (angle in degrees, right, down shift in pixels)
    points: output pixel -> input pixel, turning about the centre. Differentiable in ``points``."""
    radians = torch.deg2rad(points[:, 0])
    cos, sin = torch.cos(radians), torch.sin(radians)
    # Normalised coordinates span 2 over the width and 2 over the height: a pixel shift of t is
    # 2t/W across, and the rotation is rescaled by the aspect ratio to turn pixels, not units.
    right, down = 2 * points[:, 1] / width, 2 * points[:, 2] / height
    aspect = height / width
    theta = torch.stack(
        [
            torch.stack([cos, sin * aspect, -(cos * right + sin * aspect * down)], dim=1),
            torch.stack([-sin / aspect, cos, -(-sin / aspect * right + cos * down)], dim=1),
        ],
        dim=1,
    )
    return theta


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each image resampled bilinearly through its own matrix, zeros outside the frame."""
    sampling = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    moved = F.grid_sample(
        images, sampling, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return moved.clamp(0.0, 1.0)


def transform(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Every image under every grid point: (N, C, H, W) x (G, 3) -> (N * G, C, H, W), image-major.
    The identity point returns the images bit-identical."""
    batch, _, height, width = images.shape
    count = points.shape[0]
    theta = affine_matrices(points, height, width).repeat(batch, 1, 1)
    repeated = images.repeat_interleave(count, dim=0)
    identity = (points == 0).all(dim=1).to(images.device).repeat(batch)
    return torch.where(identity[:, None, None, None], repeated, warp(repeated, theta))


@dataclass(frozen=True)
class SpatialGrid:
    rotate: float
    translate: float
    rotations: int
    translations: int
    seed: int = 0
    name: str = "spatial_grid"

    def __post_init__(self) -> None:
        check_grid(self.rotate, self.translate, self.rotations, self.translations)

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        points = grid_points(self.rotate, self.translate, self.rotations, self.translations)
        images = images.detach()
        if images.shape[0] == 0:
            return images.clone()
        best = BestExamples.start(images)
        chunk = max(1, _IMAGES_PER_PASS // images.shape[0])
        with torch.no_grad():
            for start in range(0, points.shape[0], chunk):
                open_samples = best.open_samples()
                if open_samples.numel() == 0:
                    break
                self._try_points(
                    model, images, labels, points[start : start + chunk], open_samples, best
                )
        return best.examples

    @staticmethod
    def _try_points(
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        points: torch.Tensor,
        open_samples: torch.Tensor,
        best: BestExamples,
    ) -> None:
        """Try ``points`` on the samples not yet fooled and record in ``best`` per sample the
        first point that fools it, else its highest loss."""
        count = points.shape[0]
        moved = transform(images[open_samples], points)
        targets = labels[open_samples].repeat_interleave(count)
        logits = model(moved)
        losses = F.cross_entropy(logits, targets, reduction="none").reshape(-1, count)
        wrong = (logits.argmax(dim=1) != targets).reshape(-1, count)
        # First fooling point per sample, else the highest loss (argmax takes the first maximum).
        pick = torch.where(wrong.any(dim=1), wrong.float().argmax(dim=1), losses.argmax(dim=1))
        picked_loss = losses.gather(1, pick[:, None])[:, 0]
        chosen = moved.reshape(-1, count, *images.shape[1:])[torch.arange(len(open_samples)), pick]
        best.record(open_samples, chosen, picked_loss, wrong.any(dim=1))


@dataclass(frozen=True)
class SpatialPGD:
    """The first-order spatial attack Engstrom et al. compare the grid with: projected sign
    gradient ascent of the loss over each image's (angle, right, down), inside the box
    [-rotate, rotate] x [-translate, translate]^2, from a random start per restart, with steps of
    2.5 box-half-widths / ``steps`` (Madry et al.'s rule). The paper finds it weaker than the grid
    (the loss is far from concave in the angle): the grid is the threat's reference member.
    Per image: the first point seen that fools the model, else the highest loss; fooled images
    are not attacked further. Deterministic under ``seed``."""

    rotate: float
    translate: float
    steps: int = 10
    restarts: int = 1
    seed: int = 0
    name: str = "spatial_pgd"

    def __post_init__(self) -> None:
        check_grid(self.rotate, self.translate, 1, 1)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"spatial_pgd: steps must be an integer >= 1, got {self.steps!r}")

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        images = images.detach()
        if self.rotate == 0 and self.translate == 0:
            return images.clone()  # no transform to search: the clean images, bit-identical
        device = images.device
        generator = torch.Generator(device=device).manual_seed(self.seed)
        half_widths = torch.tensor([self.rotate, self.translate, self.translate], device=device)
        best = BestExamples.start(images)
        for _restart in range(self.restarts):
            start = torch.rand(len(images), 3, generator=generator, device=device)
            points = (2 * start - 1) * half_widths
            for _step in range(self.steps + 1):
                open_samples = best.open_samples()
                if open_samples.numel() == 0:
                    return best.examples
                gradient = self._record(model, images, labels, points, open_samples, best)
                step = 2.5 * half_widths / self.steps
                moved = points[open_samples] + step * gradient.sign()
                points[open_samples] = torch.maximum(
                    torch.minimum(moved, half_widths), -half_widths
                )
        return best.examples

    @staticmethod
    def _record(
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        points: torch.Tensor,
        open_samples: torch.Tensor,
        best: BestExamples,
    ) -> torch.Tensor:
        """Warp the open samples at their points, keep what beats their best (in place), and
        return the loss gradient with respect to the points (for the open samples only)."""
        height, width = images.shape[-2:]
        with torch.enable_grad():
            where = points[open_samples].clone().requires_grad_(True)
            moved = warp(images[open_samples], affine_matrices(where, height, width))
            logits = model(moved)
            losses = F.cross_entropy(logits, labels[open_samples], reduction="none")
            # The points only: no parameter gradients are accumulated.
            (gradient,) = torch.autograd.grad(losses.sum(), where)
        wrong = logits.argmax(dim=1) != labels[open_samples]
        best.record(open_samples, moved.detach(), losses.detach(), wrong)
        return gradient
