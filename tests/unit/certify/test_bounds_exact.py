"""On tiny ReLU networks the exact worst-case margin is computable: a mixed-integer program
(big-M encoding of each ReLU, ``scipy.optimize.milp``). No bound may exceed it, so no
certificate claims a point the exact verifier refutes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from iocane.certify import MARGIN_METHODS, certified_mask, margin_lower_bounds


def tiny_network(seed: int, classes: int = 3) -> nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, classes)
    ).double()
    # Unit-scale weights and biases, so the decision regions cross the unit square.
    for parameter in model.parameters():
        parameter.data = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 2
    return model


def _layers(model: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    linears = [m for m in model if isinstance(m, nn.Linear)]
    return [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in linears]


def _interval_bounds(layers, low: np.ndarray, high: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Pre-activation intervals of the hidden layers, by plain interval arithmetic: the big-M
    constants, computed here independently of the code under test."""
    result = []
    for weight, bias in layers[:-1]:
        center, radius = (high + low) / 2, (high - low) / 2
        pre_low = weight @ center + bias - np.abs(weight) @ radius
        pre_high = weight @ center + bias + np.abs(weight) @ radius
        result.append((pre_low, pre_high))
        low, high = np.maximum(pre_low, 0), np.maximum(pre_high, 0)
    return result


def exact_min_margin(
    model: nn.Sequential, point: np.ndarray, eps: float, label: int, other: int
) -> float:
    """min over ``||x - point||_inf <= eps, x in [0, 1]`` of ``logit[label] - logit[other]``."""
    layers = _layers(model)
    low, high = np.clip(point - eps, 0, 1), np.clip(point + eps, 0, 1)
    hidden = _interval_bounds(layers, low, high)
    widths = [len(b) for b, _ in hidden]
    # Variables: x, then per hidden layer z (pre-activation), a (post), d (binary phase).
    size = len(point) + 3 * sum(widths)
    lower_vars, upper_vars = [low], [high]
    integrality = [np.zeros(len(point))]
    rows, row_low, row_high = [], [], []
    start, previous = len(point), slice(0, len(point))
    for (weight, bias), (pre_low, pre_high) in zip(layers[:-1], hidden, strict=True):
        h = len(bias)
        z, a, d = (slice(start + k * h, start + (k + 1) * h) for k in range(3))
        lower_vars += [pre_low, np.zeros(h), np.zeros(h)]
        upper_vars += [pre_high, np.maximum(pre_high, 0), np.ones(h)]
        integrality += [np.zeros(h), np.zeros(h), np.ones(h)]
        for i in range(h):
            # z_i = W_i x + b_i
            row = np.zeros(size)
            row[z][i] = 1
            row[previous] -= weight[i]
            rows.append(row)
            row_low.append(bias[i])
            row_high.append(bias[i])
            # a_i >= z_i
            row = np.zeros(size)
            row[a][i] = 1
            row[z][i] = -1
            rows.append(row)
            row_low.append(0)
            row_high.append(np.inf)
            # a_i <= z_i - l_i (1 - d_i)
            row = np.zeros(size)
            row[a][i] = 1
            row[z][i] = -1
            row[d][i] = -pre_low[i]
            rows.append(row)
            row_low.append(-np.inf)
            row_high.append(-pre_low[i])
            # a_i <= u_i d_i
            row = np.zeros(size)
            row[a][i] = 1
            row[d][i] = -max(pre_high[i], 0)
            rows.append(row)
            row_low.append(-np.inf)
            row_high.append(0)
        start, previous = start + 3 * h, a
    weight, bias = layers[-1]
    objective = np.zeros(size)
    objective[previous] = weight[label] - weight[other]
    result = milp(
        objective,
        constraints=LinearConstraint(np.array(rows), row_low, row_high),
        integrality=np.concatenate(integrality),
        bounds=Bounds(np.concatenate(lower_vars), np.concatenate(upper_vars)),
    )
    assert result.success, result.message
    return float(result.fun + bias[label] - bias[other])


# Seeds whose decision regions cross the unit square (seeds 2 and 3 are one class all over it).
@pytest.mark.parametrize("seed", [0, 1, 4])
def test_bounds_never_exceed_the_exact_worst_case(seed: int) -> None:
    model = tiny_network(seed)
    points = torch.rand(4, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        labels = model(points).argmax(1)
    certified_total = refuted_total = 0
    for eps in (0.01, 0.05, 0.2, 0.6):
        with torch.no_grad():
            bounds = {
                m: margin_lower_bounds(model, points, labels, norm="Linf", eps=eps, method=m)
                for m in MARGIN_METHODS
            }
        exact = torch.zeros_like(bounds["ibp"])
        for n in range(len(points)):
            for j in range(exact.shape[1]):
                if j != labels[n]:
                    exact[n, j] = exact_min_margin(model, points[n].numpy(), eps, int(labels[n]), j)
        truly_robust = certified_mask(exact, labels)
        for method, bound in bounds.items():
            assert (bound <= exact + 1e-6).all(), (method, eps, (bound - exact).max())
            claimed = certified_mask(bound, labels)
            assert not (claimed & ~truly_robust).any(), (method, eps)
        assert (bounds["crown"] >= bounds["ibp"] - 1e-9).all()
        certified_total += int(certified_mask(bounds["crown"], labels).sum())
        refuted_total += int((~truly_robust).sum())
    # Both sides were exercised: some points proven, some provably not robust.
    assert certified_total > 0 and refuted_total > 0


def test_at_eps_zero_every_bound_is_the_margin_itself() -> None:
    model = tiny_network(3)
    points = torch.rand(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        logits = model(points)
        true_margin = logits.gather(1, labels[:, None]) - logits
        for method in MARGIN_METHODS:
            for norm in ("Linf", "L2"):
                bound = margin_lower_bounds(
                    model, points, labels, norm=norm, eps=0.0, method=method
                )
                torch.testing.assert_close(bound, true_margin)
