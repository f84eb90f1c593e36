"""Certified robustness: bounds that prove a prediction cannot change inside the threat ball.

Bound propagation (this package's ``graph``, ``ibp`` and ``crown`` modules) computes, per
sample, a lower bound of the margin ``logit[y] - logit[j]`` over every input in
``{x : ||x - x0||_norm <= eps} ∩ [0, 1]^d``; a point is certified when every bound for
``j != y`` is positive. Methods, weakest first:

- ``"ibp"``: interval bound propagation (Gowal et al. 2018), the last layer folded into the
  margin.
- ``"crown_ibp"``: CROWN's backward linear bound of the margin with IBP's intermediate bounds
  (Zhang et al. 2020); the training bound of the ``crown_ibp`` recipe. Not always tighter
  than IBP.
- ``"crown"``: CROWN (Zhang et al. 2018), intermediate bounds of ReLU inputs tightened by
  CROWN itself where affordable (``crown.REFINE_MAX_ELEMENTS``: in practice dense hidden
  layers; a convolutional map keeps its IBP interval, a backward pass per neuron being too
  slow on a CPU), and the result met with IBP's per sample (each is sound), so never looser
  than IBP.

Supported layers: see :data:`iocane.certify.graph.SUPPORTED`. Anything else raises
:class:`UnsupportedModel` naming the layer.

Example::

    bounds = margin_lower_bounds(model, images, labels, norm="Linf", eps=0.1, method="ibp")
    certified = certified_mask(bounds, labels)   # (N,) bool
    result = certify_bounds(model, images, labels, norm="Linf", eps=0.1)
    result["best"].accuracy
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from iocane.certify import crown, ibp
from iocane.certify.graph import SUPPORTED, UnsupportedModel, trace
from iocane.certify.smoothing import SmoothingCertificate, smoothed_certify

BOUND_METHODS = ("ibp", "crown")  # evaluation methods, weakest first
MARGIN_METHODS = ("ibp", "crown_ibp", "crown")  # every method margin_lower_bounds knows
NORMS = ("Linf", "L2")

__all__ = [
    "BOUND_METHODS",
    "MARGIN_METHODS",
    "SUPPORTED",
    "Certificate",
    "SmoothingCertificate",
    "UnsupportedModel",
    "certified_mask",
    "certify_bounds",
    "check_certifiable",
    "margin_lower_bounds",
    "smoothed_certify",
]


@dataclass
class Certificate:
    method: str
    norm: str
    eps: float
    certified: torch.Tensor  # (N,) bool, on CPU: proven correct over the whole ball
    accuracy: float  # certified accuracy = certified.float().mean()
    seconds: float


def check_certifiable(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModel` if ``model`` has a layer the verifier cannot bound.

    Structural only (a trace, no forward pass); batch norm's mode is checked when bounding."""
    trace(model)


def _check_arguments(norm: str, eps: float, method: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r} for certified bounds; known: {', '.join(NORMS)}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0 for certified bounds, got {eps}")
    if method not in MARGIN_METHODS:
        raise ValueError(f"unknown bound method {method!r}; known: {', '.join(MARGIN_METHODS)}")


def margin_lower_bounds(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str,
    eps: float,
    method: str,
) -> torch.Tensor:
    """(N, K) lower bounds of ``logit[y] - logit[j]`` over the threat set, 0 at ``j == y``.

    Differentiable in the model's parameters; does not change the model's mode (batch norm
    must already be in eval mode)."""
    _check_arguments(norm, eps, method)
    graph = trace(model)
    if method == "ibp":
        env = ibp.propagate(graph, images, norm, eps)
        return ibp.margin_from_logits(graph, env, labels)
    return crown.margin_lower_bounds(graph, images, labels, norm, eps, method)


def certified_mask(bounds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) bool: every margin bound for ``j != y`` is positive."""
    others = torch.ones_like(bounds, dtype=torch.bool).scatter(1, labels[:, None], False)
    return ((bounds > 0) | ~others).all(dim=1)


def certify_bounds(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str,
    eps: float,
    methods: Sequence[str] = BOUND_METHODS,
    batch_size: int = 256,
) -> dict[str, Certificate]:
    """Certify each image with each method, plus ``"best"``: the per-sample union over them.

    Runs without gradients and in eval mode (the model's mode is restored afterwards)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for method in methods:
        _check_arguments(norm, eps, method)
    check_certifiable(model)
    results: dict[str, Certificate] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for method in methods:
                results[method] = _certify_one(model, images, labels, norm, eps, method, batch_size)
    finally:
        model.train(was_training)
    union = torch.zeros(len(images), dtype=torch.bool)
    for certificate in results.values():
        union |= certificate.certified
    results["best"] = Certificate(
        "best", norm, eps, union, _share(union), sum(c.seconds for c in results.values())
    )
    return results


def _certify_one(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    eps: float,
    method: str,
    batch_size: int,
) -> Certificate:
    start = time.perf_counter()
    parts = []
    for begin in range(0, len(images), batch_size):
        batch, batch_labels = images[begin : begin + batch_size], labels[begin : begin + batch_size]
        bounds = margin_lower_bounds(model, batch, batch_labels, norm=norm, eps=eps, method=method)
        parts.append(certified_mask(bounds, batch_labels).cpu())
    certified = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)
    return Certificate(method, norm, eps, certified, _share(certified), time.perf_counter() - start)


def _share(mask: torch.Tensor) -> float:
    return float(mask.float().mean()) if len(mask) else 0.0
