"""Threat models: the geometry of an Lp ball, apart from any optimiser.

Each Lp threat model knows how to take an ascent step, project a perturbation back into the eps
ball, and draw a uniform random start; every threat model (the sparse ones too: L0 and patch,
whose eps counts pixels) knows its distance, which the trust checks hold each attack to. Attacks
look them up by name in ``THREAT_MODELS`` and stay norm-agnostic. Everything works per sample on
batches (N, C, H, W) in [0,1] pixel units.
"""

from __future__ import annotations

from typing import Protocol

import torch

_TINY = 1e-12  # guards divisions by a zero gradient or perturbation norm


class ThreatModel(Protocol):
    name: str

    def step(self, grad: torch.Tensor, step_size: float) -> torch.Tensor: ...

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor: ...

    def random_start(
        self, shape: torch.Size, eps: float, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor: ...

    def norm(self, delta: torch.Tensor) -> torch.Tensor: ...


def _per_sample_l2(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (tensor.dim() - 1)))


class Linf:
    name = "Linf"

    def step(self, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        return step_size * grad.sign()

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return delta.clamp(-eps, eps)

    def random_start(
        self, shape: torch.Size, eps: float, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        return (torch.rand(shape, generator=generator, device=device) * 2 - 1) * eps

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().amax(dim=1)


class L2:
    name = "L2"

    def step(self, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        return step_size * grad / (_per_sample_l2(grad) + _TINY)

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        factor = (eps / (_per_sample_l2(delta) + _TINY)).clamp(max=1.0)
        return delta * factor

    def random_start(
        self, shape: torch.Size, eps: float, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        # Uniform in the ball: a Gaussian direction with radius eps * U^(1/d).
        direction = torch.randn(shape, generator=generator, device=device)
        direction = direction / (_per_sample_l2(direction) + _TINY)
        dims = direction[0].numel()
        radius = torch.rand(shape[0], generator=generator, device=device) ** (1.0 / dims)
        return direction * radius.view(-1, *([1] * (len(shape) - 1))) * eps

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).norm(p=2, dim=1)


def changed_pixels(delta: torch.Tensor) -> torch.Tensor:
    """(N, H, W): which pixels a perturbation changes, in any channel. Exact: an attack that
    leaves a pixel alone must leave it bit for bit (``torch.where``, not arithmetic)."""
    return delta.abs().amax(dim=1) > 0


class L0:
    """Sparse: at most eps pixels changed, each to anything in [0, 1]. A pixel counts once
    whatever its channels (Croce et al. 2022's pixel budget), so eps is a whole number."""

    name = "L0"

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return changed_pixels(delta).flatten(1).sum(dim=1).to(delta.dtype)

    def project(self, delta: torch.Tensor, eps: float, images: torch.Tensor) -> torch.Tensor:
        """The nearest perturbation (in L2) with at most eps pixels changed and images + delta
        in [0, 1]. The box acts per coordinate, so each pixel either keeps its clipped change or
        drops it; keeping it saves ||d||^2 - ||d - clipped||^2 over its channels, and the
        projection keeps the eps pixels that save most (Croce & Hein 2019's pixel-wise
        projection). Ties go to the lower index; pixels left out are exactly zero."""
        keep = top_pixels(_box_gain(delta, images), pixel_budget(eps))
        clipped = (images + delta).clamp(0.0, 1.0) - images
        return torch.where(keep[:, None], clipped, torch.zeros_like(delta))


def _box_gain(delta: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(N, H, W): how much of ||delta||^2 a pixel keeps when its change is clipped to the box."""
    clipped = (images + delta).clamp(0.0, 1.0) - images
    return (delta.pow(2) - (delta - clipped).pow(2)).sum(dim=1)


def top_pixels(scores: torch.Tensor, count: int) -> torch.Tensor:
    """(N, H, W) boolean: each sample's ``count`` highest-scoring pixels of ``scores`` (N, H, W)
    (all of them when there are fewer). A stable sort, so ties go to the lower index."""
    n, height, width = scores.shape
    count = min(count, height * width)
    flat = scores.flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)[:, :count]
    chosen = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)
    return chosen.view(n, height, width)


class Patch:
    """A patch: every changed pixel inside one eps x eps square, placed anywhere, content free in
    [0, 1]. The distance is the side of the smallest square holding every changed pixel (0 for
    none); the attacks choose the place and the content (``attacks.patch``)."""

    name = "patch"

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        changed = changed_pixels(delta)
        rows, columns = changed.any(dim=2), changed.any(dim=1)  # (N, H), (N, W)
        return torch.maximum(_extent(rows), _extent(columns)).to(delta.dtype)


def pixel_budget(eps: float) -> int:
    """The whole number of pixels an L0 or patch ``eps`` stands for: an int or an integral float
    (params may hold 3.0), never a fraction nor a negative, which would make the budget a guess."""
    if isinstance(eps, bool) or not float(eps).is_integer() or eps < 0:
        raise ValueError(f"eps counts pixels for L0 and patch: a whole number >= 0, not {eps!r}")
    return int(eps)


def _extent(occupied: torch.Tensor) -> torch.Tensor:
    """Per row of a boolean (N, L): last True index - first True index + 1, 0 if none."""
    positions = torch.arange(occupied.shape[1], device=occupied.device)
    last = torch.where(occupied, positions, -1).amax(dim=1)
    first = torch.where(occupied, positions, occupied.shape[1]).amin(dim=1)
    return (last - first + 1).clamp(min=0)


THREAT_MODELS: dict[str, ThreatModel] = {"Linf": Linf(), "L2": L2(), "L0": L0(), "patch": Patch()}


def threat_model(norm: str) -> ThreatModel:
    try:
        return THREAT_MODELS[norm]
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; known: {', '.join(THREAT_MODELS)}") from None


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on the attack's device, so random starts are reproducible under a seed."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
