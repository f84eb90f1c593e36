"""The evaluation-trust checks: the signs that an evaluation's robust accuracy cannot be trusted.

After Carlini et al. 2019 ("On Evaluating Adversarial Robustness") and AutoAttack's ``checks.py``:
checks on the model itself (a randomised forward pass, probabilities instead of logits, zero or
non-finite input gradients), on each attack's examples (finite, in [0, 1], inside the ball), on
the attacks' accuracies against each other (iterative beats single-step, more steps never help the
model, black-box never beats white-box), and against an independent reference implementation.
Each check returns the flag text to report; ``evaluate_robustness`` runs them. ``cw_curve_flags``
compares C&W's distances with the L2 curve; its flags are reported apart (``cw_flags``) and do
not fail the gate: they doubt the distance figure, not the robust accuracy the gate reads.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from attacks import registry, threat_model

BOUND_TOLERANCE = 1e-5  # float32 rounding at the ball's surface and at 0 and 1


def bound_violation(
    name: str, adversarial: torch.Tensor, images: torch.Tensor, norm: str, eps: float
) -> str | None:
    """The flag for an attack whose examples are not finite, leave [0, 1] or leave the ball."""
    if not torch.isfinite(adversarial).all():
        return f"{name}: adversarial examples contain NaN or inf"
    if adversarial.min() < -BOUND_TOLERANCE or adversarial.max() > 1 + BOUND_TOLERANCE:
        return f"{name}: adversarial examples leave the [0, 1] image range"
    distance = threat_model(norm).norm(adversarial - images).max().item()
    if distance > eps * (1 + 1e-4) + BOUND_TOLERANCE:
        return f"{name}: adversarial examples leave the {norm} ball (distance {distance:.4g} > eps)"
    return None


def model_checks(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, str]:
    """Checks on the model itself, by name: ``randomised`` forward pass, ``probabilities``
    instead of logits, ``non_finite_gradients``, ``no_gradients`` (zero or missing input
    gradients). The value is the trust flag to report."""
    checks = {}
    with torch.no_grad():
        first, second = model(images), model(images)
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
        checks["randomised"] = (
            "randomised forward pass: two passes on the same input differ; expectation over "
            "transformation (eot_pgd) joins the suite, and the predictions themselves are random"
        )
    rows_sum_to_one = torch.allclose(first.sum(1), torch.ones(len(first)), atol=1e-3)
    if first.min() >= 0 and first.max() <= 1 and rows_sum_to_one:
        checks["probabilities"] = (
            "outputs look like probabilities, not logits: cross-entropy on them saturates and "
            "weakens gradient attacks"
        )
    with torch.enable_grad():
        inputs = images.clone().requires_grad_(True)
        loss = F.cross_entropy(model(inputs), labels, reduction="sum")
        grad = None
        if loss.requires_grad:  # else a step outside autograd cut the input off
            (grad,) = torch.autograd.grad(loss, inputs, allow_unused=True)
    if grad is not None and not torch.isfinite(grad).all():
        checks["non_finite_gradients"] = (
            "non-finite input gradients: gradient attacks cannot be trusted; BPDA (bpda_pgd) "
            "joins the suite"
        )
    else:
        zero_share = 1.0 if grad is None else (grad.flatten(1).abs().amax(1) == 0).float().mean()
        if zero_share > 0.5:
            checks["no_gradients"] = (
                f"zero input gradients for {float(zero_share):.0%} of samples: a sign of gradient "
                "masking (shattered or obfuscated gradients); BPDA (bpda_pgd) joins the suite"
            )
    return checks


def adaptive_attacks_for(checks: Mapping[str, str]) -> list[str]:
    """The adaptive attacks the model checks call for (see ``attacks.adaptive``)."""
    wanted = []
    if "randomised" in checks:
        wanted.append("eot_pgd")
    if "no_gradients" in checks or "non_finite_gradients" in checks:
        wanted.append("bpda_pgd")
    return wanted


def without_adaptive(flag: str, skipped: Sequence[str], norm: str) -> str:
    """A model check's flag, told the truth where the adaptive attack it names could not join
    the suite (it has no ``norm`` version: EOT-PGD and BPDA-PGD step in Lp balls)."""
    for name in skipped:
        joined = f"({name}) joins the suite"
        flag = flag.replace(joined, f"({name}) has no {norm} version and did not join the suite")
    return flag


def tolerance(n_clean_correct: int) -> float:
    """How much two attacks' robust accuracies may differ by chance: 1%, or three samples where
    that is more (random starts on a small evaluation set)."""
    return max(0.01, 3 / max(n_clean_correct, 1))


def comparison_flags(
    per_attack: Mapping[str, float], n_clean_correct: int = 1000, norm: str = "Linf"
) -> list[str]:
    """Carlini et al. 2019: iterative attacks must beat single-step ones, more steps and
    restarts must not raise robust accuracy, and black-box attacks must not beat white-box
    ones (in an Lp ball: ``norm``); otherwise gradients are probably masked."""
    flags = []
    black_box = set(registry.names_of_kind("black-box"))
    not_white_box = black_box | set(registry.names_of_kind("reference"))
    if "fgsm" in per_attack:
        for name, accuracy in per_attack.items():
            iterative = name != "fgsm" and name not in not_white_box
            if iterative and accuracy > per_attack["fgsm"] + 1e-9:
                flags.append(
                    f"iterative attack {name} ({accuracy:.4f}) is weaker than single-step FGSM "
                    f"({per_attack['fgsm']:.4f}): a sign of gradient masking"
                )
    allowed = tolerance(n_clean_correct)
    for weaker, stronger in registry.budget_order():
        if weaker not in per_attack or stronger not in per_attack:
            continue
        if per_attack[stronger] > per_attack[weaker] + allowed:
            flags.append(
                f"{stronger} ({per_attack[stronger]:.4f}) is weaker than {weaker} "
                f"({per_attack[weaker]:.4f}): more steps, restarts or a better optimiser "
                "raised robust accuracy, a sign of gradient masking or a broken attack"
            )
    white_box = [value for name, value in per_attack.items() if name not in not_white_box]
    # Only in an Lp ball is a black-box win a smell. Sparse threats (L0, patch) are
    # combinatorial: which pixels to change is a discrete choice gradients see poorly, and a
    # score-based search over it is often the strongest attack on models whose gradients are
    # fine (Croce et al. 2022, Sparse-RS, beats white-box L0 and patch attacks).
    sparse = norm not in registry.LP_NORMS
    for name in set() if sparse else black_box & set(per_attack):
        if white_box and per_attack[name] < min(white_box) - 1e-9:
            flags.append(
                f"black-box attack {name} ({per_attack[name]:.4f}) beats every white-box attack "
                f"(best {min(white_box):.4f}): gradients are probably masked"
            )
    return flags


def broken_only_by_reference(
    survivors: Mapping[str, torch.Tensor], clean_correct: torch.Tensor
) -> dict[str, int]:
    """For each independent reference implementation run (AutoAttack's own code): how many
    points it broke that every one of iocane's own attacks left standing."""
    references = set(registry.names_of_kind("reference"))
    own_survivors = clean_correct.clone()
    for name, survives in survivors.items():
        if name not in references:
            own_survivors &= survives
    return {
        name: int((own_survivors & ~survivors[name]).sum())
        for name in sorted(references & set(survivors))
    }


def cross_check_flags(missed_by_reference: Mapping[str, int], n_clean_correct: int) -> list[str]:
    """A reference that breaks more than 0.5% of the points iocane's attacks all missed means
    iocane's own suite would have overstated robustness. Those points count in the worst case
    either way; a point or two is the noise of random restarts."""
    return [
        f"the independent reference {name} broke {missed} of {n_clean_correct} clean-correct "
        "points that every iocane attack missed: iocane's own attacks are weaker than the "
        "reference on this model (those points count in the worst case)"
        for name, missed in missed_by_reference.items()
        if missed > 0.005 * n_clean_correct
    ]


def half_accuracy_eps(grid: Sequence[float], accuracies: Sequence[float]) -> float | None:
    """The eps at which an accuracy-vs-eps curve (clean accuracy at ``grid[0] == 0``) first falls
    to half its clean accuracy, interpolated linearly between grid points; ``None`` if it never
    does on the grid (or the model has no clean accuracy to halve)."""
    half = accuracies[0] / 2
    if half <= 0:
        return None
    points = zip(grid, accuracies, strict=True)
    for (eps_a, acc_a), (eps_b, acc_b) in itertools.pairwise(points):
        if acc_b <= half:  # and acc_a > half, else the previous pair returned
            return eps_a + (eps_b - eps_a) * (acc_a - half) / (acc_a - acc_b)
    return None


def cw_curve_flags(cw: Mapping, half_eps: float | None) -> list[str]:
    """C&W's median minimal L2 distance against the run's own L2 curve: where APGD-CE breaks
    half the clean-correct points by L2 eps e, the median distance to the nearest adversarial
    example is at most e, so a C&W median above e (or not found) means the C&W search is too
    weak on this model and its distance overstates robustness. ``cw`` is a
    ``cw_distance_summary``; ``half_eps`` is ``half_accuracy_eps`` of the hardened model's L2
    curve. No flag when the curve never falls to half (``None``): nothing to compare with."""
    if half_eps is None:
        return []
    median = cw.get("cw_median_l2")
    if median is not None and median <= half_eps:
        return []
    found = (
        f"not found for {cw['cw_not_found_share']:.0%} of the points (c up to "
        f"{cw['cw_max_const']:g})"
        if median is None
        else f"{median:.3f}"
    )
    return [
        f"C&W L2 median minimal distance {found} exceeds L2 eps {half_eps:.3f}, where the run's "
        "own APGD-CE L2 curve already falls to half its clean accuracy: the C&W search is too "
        "weak on this model and its distance overstates robustness (the worst case does not "
        "rest on it)"
    ]
