"""evaluate_robustness: the per-sample worst case, and trust checks that fire on broken models
and stay silent on an honest one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import FGSM, PGD
from attacks.autoattack_reference import AutoAttackReference
from attacks.sparse_rs import SparseRS
from attacks.square import SquareAttack
from iocane.robustness.checks import (
    broken_only_by_reference,
    comparison_flags,
    cross_check_flags,
)
from iocane.robustness.suite import evaluate_robustness


class Softmaxed(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).softmax(1)


class Noisy(nn.Module):
    """A randomised defence: fresh noise on every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images + 0.05 * torch.randn_like(images))


class Quantised(nn.Module):
    """A non-differentiable preprocessor: rounding makes every input gradient zero."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(images * 4) / 4)


def _evaluate(model: nn.Module, images, labels, **kwargs):
    return evaluate_robustness(
        model, images, labels, norm="Linf", eps=0.1, preset="quick", device="cpu", **kwargs
    )


def test_honest_model_raises_no_flag_and_reports_the_worst_case(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    result = _evaluate(model, images, labels)
    assert result.flags == []
    assert set(result.per_attack) == {"fgsm", "pgd_short", "pgd", "apgd_ce"}
    assert result.robust_accuracy <= min(result.per_attack.values())
    assert result.robust_accuracy <= result.clean_accuracy
    assert sum(result.robust_per_sample) == round(result.robust_accuracy * len(labels))


def test_probabilities_instead_of_logits_are_flagged(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    flags = _evaluate(Softmaxed(model), images, labels).flags
    assert any("probabilities" in flag for flag in flags)


def test_randomised_forward_pass_is_flagged(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    flags = _evaluate(Noisy(model), images, labels).flags
    assert any("randomised forward pass" in flag for flag in flags)


def test_masked_gradients_are_flagged_and_black_box_beats_white_box(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    suite = {
        "fgsm": FGSM(eps=0.1),
        "pgd": PGD(eps=0.1, steps=10),
        "square": SquareAttack(eps=0.1, n_queries=300),
    }
    # adaptive=False: BPDA, which the checks call for here, would beat Square (tested apart)
    result = _evaluate(Quantised(model), images, labels, attacks=suite, adaptive=False)
    assert any("zero input gradients" in flag for flag in result.flags)
    assert any("black-box attack square" in flag for flag in result.flags)
    # The worst case still counts Square's successes: masking does not inflate the figure.
    assert result.robust_accuracy <= result.per_attack["square"]


@pytest.mark.parametrize(
    ("norm", "eps", "said"),
    [
        ("Linf", 0.1, "BPDA (bpda_pgd) joins the suite"),
        ("L0", 2, "BPDA (bpda_pgd) has no L0 version and did not join the suite"),
    ],
)
def test_the_masking_flag_says_whether_bpda_joined(trained_digits_model, norm, eps, said) -> None:
    """BPDA steps in Lp balls: under a sparse threat the flag must not claim it ran."""
    model, images, labels = trained_digits_model
    images, labels = images[:16], labels[:16]
    suite = {"fgsm" if norm == "Linf" else "sparse_rs": _cheap_attack(norm, eps)}
    result = evaluate_robustness(
        Quantised(model),
        images,
        labels,
        norm=norm,
        eps=eps,
        preset="quick",
        device="cpu",
        attacks=suite,
    )
    masking = [flag for flag in result.flags if "zero input gradients" in flag]
    assert len(masking) == 1 and masking[0].endswith(said), result.flags
    assert ("bpda_pgd" in result.per_attack) == (norm == "Linf")


def _cheap_attack(norm: str, eps: float):
    return FGSM(eps=eps) if norm == "Linf" else SparseRS(eps=eps, n_queries=20)


def test_comparison_flags() -> None:
    assert comparison_flags({"fgsm": 0.5, "pgd": 0.4, "square": 0.45}) == []
    assert "weaker than single-step" in comparison_flags({"fgsm": 0.4, "pgd": 0.5})[0]
    assert "black-box" in comparison_flags({"fgsm": 0.6, "pgd": 0.5, "square": 0.3})[0]
    assert "black-box attack transfer" in comparison_flags({"pgd": 0.5, "transfer": 0.4})[0]
    assert (
        "apgd_ce (0.6000) is weaker than pgd" in comparison_flags({"pgd": 0.5, "apgd_ce": 0.6})[0]
    )
    # More steps and restarts must not raise robust accuracy, beyond chance.
    more_steps_help = comparison_flags({"pgd_short": 0.5, "pgd": 0.52}, n_clean_correct=1000)
    assert "pgd (0.5200) is weaker than pgd_short" in more_steps_help[0]
    assert comparison_flags({"pgd_short": 0.5, "pgd": 0.505}, n_clean_correct=1000) == []
    # On 100 points, three samples are within chance.
    assert comparison_flags({"pgd_short": 0.5, "pgd": 0.52}, n_clean_correct=100) == []


def test_a_black_box_win_is_a_smell_in_an_lp_ball_but_not_under_a_sparse_threat() -> None:
    # Sparse-RS beating sPGD is common on honest models (Croce et al. 2022): no flag for L0 or
    # patch; the same figures in an Lp ball are flagged.
    sparse_wins = {"pgd_l0": 0.5, "sparse_rs": 0.3}
    assert "black-box attack sparse_rs" in comparison_flags(sparse_wins, norm="Linf")[0]
    assert comparison_flags(sparse_wins, norm="L0") == []
    assert comparison_flags({"pgd": 0.5, "square": 0.3}, norm="patch") == []
    assert comparison_flags({"pgd": 0.5, "square": 0.3}, norm="L2") != []


def test_cross_check_counts_points_only_the_reference_breaks() -> None:
    clean = torch.ones(400, dtype=torch.bool)
    ours = torch.ones(400, dtype=torch.bool)
    ours[:100] = False
    reference = ours.clone()
    assert broken_only_by_reference({"pgd": ours, "autoattack": reference}, clean) == {
        "autoattack": 0
    }
    reference[100:102] = False  # two points, 0.5%: within the noise of random restarts
    missed = broken_only_by_reference({"pgd": ours, "autoattack": reference}, clean)
    assert missed == {"autoattack": 2} and cross_check_flags(missed, 400) == []
    reference[102:110] = False
    missed = broken_only_by_reference({"pgd": ours, "autoattack": reference}, clean)
    (flag,) = cross_check_flags(missed, 400)
    assert "broke 10 of 400" in flag


def test_autoattack_cross_check_catches_a_weak_suite(trained_digits_model) -> None:
    # FGSM alone is far weaker than AutoAttack's APGD-CE on a natural model: the cross-check
    # must say so, and the worst case must include the reference's points. (AutoAttack's
    # standard version takes minutes here; its APGD-CE alone takes seconds.)
    model, images, labels = trained_digits_model
    images, labels = images[:60], labels[:60]
    reference = AutoAttackReference(eps=0.1, version="custom", attacks=("apgd-ce",))
    suite = {"fgsm": FGSM(eps=0.1), "autoattack": reference}
    result = _evaluate(model, images, labels, attacks=suite)
    assert any("independent reference autoattack" in flag for flag in result.flags)
    assert result.robust_accuracy <= result.per_attack["autoattack"] < result.per_attack["fgsm"]
    assert result.broken_only_by_reference["autoattack"] > 0


def test_unknown_preset_and_norm_fail_before_work(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    with pytest.raises(ValueError, match="unknown suite preset"):
        evaluate_robustness(model, images, labels, eps=0.1, preset="paranoid", device="cpu")
    with pytest.raises(ValueError, match="unknown norm"):
        evaluate_robustness(model, images, labels, eps=0.1, norm="L1", device="cpu")
