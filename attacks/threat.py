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


class Patch:
    """A patch: every changed pixel inside one eps x eps square, placed anywhere, content free in
    [0, 1]. The distance is the side of the smallest square holding every changed pixel (0 for
    none); the attacks choose the place and the content (``attacks.patch``)."""

    name = "patch"

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        changed = changed_pixels(delta)
        rows, columns = changed.any(dim=2), changed.any(dim=1)  # (N, H), (N, W)
        return torch.maximum(_extent(rows), _extent(columns)).to(delta.dtype)


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
