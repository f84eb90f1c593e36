"""Threat models: the geometry of an Lp ball, apart from any optimiser.

Each threat model knows how to take an ascent step, project a perturbation back into the eps
ball, and draw a uniform random start. Attacks look them up by name in ``THREAT_MODELS`` and
stay norm-agnostic. Everything works per sample on batches (N, C, H, W) in [0,1] pixel units.
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


THREAT_MODELS: dict[str, ThreatModel] = {"Linf": Linf(), "L2": L2()}


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
