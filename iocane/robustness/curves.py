"""Accuracy-vs-eps curves: what robustness looks like over perturbation sizes, and two more checks.

The curves attack a fixed subset of test images with APGD-CE at a grid of eps values, for the
natural and the hardened model, under Linf and L2. Two of Carlini et al.'s sanity checks read
them: accuracy must not rise as eps grows, and at a large eps (Linf 0.5 lets the attacker turn
any image into flat grey) it must fall to chance level; otherwise the attack is not working and
the evaluation's numbers cannot be trusted. ``iocane.reports.figures`` draws them.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from attacks.apgd import APGD

MULTIPLIERS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
LARGE_LINF_EPS = 0.5  # flat grey is reachable from any image in [0, 1]
_TOLERANCE = 0.02  # one or two points of noise on a few hundred images


def eps_grids(norm: str, eps: float, image_numel: int) -> dict[str, list[float]]:
    """Linf and L2 grids around the evaluation eps. The other norm's reference radius follows
    the convention eps_L2 = eps_Linf * sqrt(d) / 4 (MNIST 0.3 ~ 2.1; CIFAR 8/255 ~ 0.43)."""
    scale = math.sqrt(image_numel) / 4
    if norm == "Linf":
        reference = {"Linf": eps, "L2": eps * scale}
    else:
        reference = {"Linf": eps / scale, "L2": eps}
    grids = {name: [m * ref for m in MULTIPLIERS] for name, ref in reference.items()}
    if grids["Linf"][-1] < LARGE_LINF_EPS:
        grids["Linf"].append(LARGE_LINF_EPS)
    return grids


@torch.no_grad()
def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (model(images).argmax(1) == labels).float().mean().item()


def accuracy_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    grid: list[float],
    steps: int,
    seed: int,
) -> list[float]:
    """Accuracy under APGD-CE at each eps of ``grid`` (clean accuracy at eps 0)."""
    accuracies = []
    for eps in grid:
        if eps == 0:
            accuracies.append(_accuracy(model, images, labels))
            continue
        attack = APGD(eps=eps, norm=norm, steps=steps, seed=seed)
        accuracies.append(_accuracy(model, attack(model, images, labels), labels))
    return accuracies


def curve_flags(curves: dict[str, dict[str, list[float]]], num_classes: int) -> list[str]:
    """Flags on the hardened model's curves: ``curves[norm]`` holds "eps" and "hardened"."""
    flags = []
    for norm, curve in curves.items():
        accuracies = curve["hardened"]
        points = zip(curve["eps"], accuracies, strict=True)
        for (eps_a, acc_a), (eps_b, acc_b) in itertools.pairwise(points):
            if acc_b > acc_a + _TOLERANCE:
                flags.append(
                    f"{norm} robust accuracy rises with eps ({acc_a:.3f} at {eps_a:.3g} -> "
                    f"{acc_b:.3f} at {eps_b:.3g}): the attack is not converging"
                )
                break
    linf = curves.get("Linf")
    if linf and linf["eps"][-1] >= LARGE_LINF_EPS:
        chance = 1.0 / num_classes
        final = linf["hardened"][-1]
        if final > chance + 0.05:
            flags.append(
                f"robust accuracy {final:.3f} at Linf eps {linf['eps'][-1]:.2g} stays above chance "
                f"({chance:.2f}): the attacks fail where any image can be made flat grey, a sign "
                "of gradient masking"
            )
    return flags
