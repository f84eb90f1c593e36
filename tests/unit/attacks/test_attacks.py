"""Attacks against known answers; the properties every registered attack must have are in
``test_registered_attacks.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attacks import FGSM, PGD, threat_model
from attacks.apgd import APGD, APGDTargeted, checkpoints
from attacks.cw import CarliniWagnerL2
from attacks.square import SquareAttack, l2_window_side, square_fraction, window_pattern
from attacks.suites import PRESETS, build_suite
from tests.helpers.models import TinyLinear

# The properties every attack must have (inside the eps ball and [0, 1], deterministic) are
# checked on every registered attack at every norm it supports: test_registered_attacks.py.


def test_pgd_beats_fgsm_and_restarts_help(trained_digits_model) -> None:
    model, images, labels = trained_digits_model

    def accuracy(adversarial: torch.Tensor) -> float:
        with torch.no_grad():
            return (model(adversarial).argmax(1) == labels).float().mean().item()

    eps = 0.05
    fgsm = accuracy(FGSM(eps=eps)(model, images, labels))
    pgd_one = accuracy(PGD(eps=eps, steps=20, restarts=1)(model, images, labels))
    pgd_three = accuracy(PGD(eps=eps, steps=20, restarts=3)(model, images, labels))
    assert pgd_one <= fgsm
    assert pgd_three <= pgd_one


def _linear_case() -> tuple[TinyLinear, torch.Tensor, torch.Tensor]:
    # Two classes, logit difference w.x + b with w = (1, -2, 0.5, 0) - (0, 0, 0, 0).
    weight = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    model = TinyLinear(weight, torch.zeros(2))
    images = torch.full((1, 1, 2, 2), 0.5)
    labels = torch.tensor([0])
    return model, images, labels


def test_fgsm_linf_known_answer_on_linear_model() -> None:
    # The optimal Linf perturbation against a linear margin is -eps * sign(w) on each pixel.
    model, images, labels = _linear_case()
    adversarial = FGSM(eps=0.1)(model, images, labels)
    expected = images + torch.tensor([-0.1, 0.1, -0.1, 0.0]).view(1, 1, 2, 2)
    assert torch.allclose(adversarial, expected)


def test_pgd_l2_known_answer_on_linear_model() -> None:
    # The optimal L2 perturbation is -eps * w / ||w||, well inside [0,1] from 0.5.
    model, images, labels = _linear_case()
    w = torch.tensor([1.0, -2.0, 0.5, 0.0])
    adversarial = PGD(eps=0.2, norm="L2", steps=20, random_start=False)(model, images, labels)
    expected = images - 0.2 * (w / w.norm()).view(1, 1, 2, 2)
    assert torch.allclose(adversarial, expected, atol=1e-5)


def test_pgd_does_not_touch_parameter_gradients(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    model.zero_grad(set_to_none=True)
    PGD(eps=0.1, steps=3)(model, images[:8], labels[:8])
    assert all(parameter.grad is None for parameter in model.parameters())


def test_adversarial_loss_exceeds_clean_loss(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    adversarial = PGD(eps=0.1, steps=10)(model, images, labels)
    with torch.no_grad():
        assert F.cross_entropy(model(adversarial), labels) > F.cross_entropy(model(images), labels)


def test_unknown_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="L1"):
        threat_model("L1")


def _closed_form_robust(model: TinyLinear, images: torch.Tensor, labels: torch.Tensor, eps: float):
    """A linear classifier resists every Linf perturbation of size eps (away from the [0,1]
    edges) iff each margin (w_y - w_j).x + (b_y - b_j) exceeds eps * ||w_y - w_j||_1."""
    weight, bias = model.linear.weight, model.linear.bias
    flat = images.flatten(1)
    robust = torch.ones(len(labels), dtype=torch.bool)
    for j in range(weight.shape[0]):
        difference = weight[labels] - weight[j]
        margin = (difference * flat).sum(1) + bias[labels] - bias[j]
        worst = margin - eps * difference.abs().sum(1)
        robust &= (labels == j) | (worst > 0)
    return robust


def _l2_margin_ratio(model: TinyLinear, images: torch.Tensor, labels: torch.Tensor, eps: float):
    """For a binary linear classifier: margin / (eps * ||w_y - w_other||_2), the margin as a
    share of the most any L2 perturbation of size eps can remove (away from the [0,1] edges)."""
    weight, bias = model.linear.weight, model.linear.bias
    other = 1 - labels
    difference = weight[labels] - weight[other]
    margin = (difference * images.flatten(1)).sum(1) + bias[labels] - bias[other]
    return margin / (eps * difference.norm(dim=1))


def _closed_form_robust_l2(model: TinyLinear, images: torch.Tensor, labels: torch.Tensor, eps):
    """A binary linear classifier resists every L2 perturbation of size eps (away from the
    [0,1] edges) iff its margin exceeds eps * ||w_y - w_other||_2."""
    return _l2_margin_ratio(model, images, labels, eps) > 1


def _linear_problem(classes: int, seed: int = 0, side: int = 2):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, side * side, generator=generator)
    model = TinyLinear(weight, torch.zeros(classes))
    # Inside [0.3, 0.7]: a perturbation of Linf (or L2) size <= 0.3 never reaches the [0, 1]
    # edges, so the closed forms hold.
    images = 0.3 + 0.4 * torch.rand(400, 1, side, side, generator=generator)
    with torch.no_grad():
        labels = model(images).argmax(1)  # every point clean-correct
    return model, images, labels


@pytest.mark.parametrize(
    "make_attack",
    [
        lambda: PGD(eps=0.1, steps=20),
        lambda: APGD(eps=0.1, steps=50),
        lambda: SquareAttack(eps=0.1, n_queries=300),
    ],
    ids=["pgd", "apgd-ce", "square"],
)
def test_attacks_reach_the_known_answer_on_a_binary_linear_model(make_attack) -> None:
    model, images, labels = _linear_problem(classes=2)
    expected = _closed_form_robust(model, images, labels, 0.1)
    assert 0.1 < expected.float().mean() < 0.9  # a test where the attack has work to do
    adversarial = make_attack()(model, images, labels)
    with torch.no_grad():
        survived = model(adversarial).argmax(1) == labels
    assert torch.equal(survived, expected)


def test_apgd_targeted_reaches_the_known_answer_on_a_multiclass_linear_model() -> None:
    model, images, labels = _linear_problem(classes=5, seed=1)
    expected = _closed_form_robust(model, images, labels, 0.1)
    assert 0.1 < expected.float().mean() < 0.9
    attack = APGDTargeted(eps=0.1, steps=50, n_target_classes=4)
    with torch.no_grad():
        survived = model(attack(model, images, labels)).argmax(1) == labels
    assert torch.equal(survived, expected)


def test_apgd_checkpoints_follow_the_paper() -> None:
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 of 100 iterations.
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_square_fraction_halves_on_schedule() -> None:
    assert square_fraction(0.8, 0, 10_000) == 0.8
    assert square_fraction(0.8, 11, 10_000) == 0.4
    assert square_fraction(0.8, 9_000, 10_000) == pytest.approx(0.8 / 512)
    assert square_fraction(0.8, 2, 1_000) == 0.4  # the schedule scales with the budget
    assert square_fraction(0.8, 6, 1_000) == 0.2


def test_square_refuses_an_unknown_norm() -> None:
    model, images, labels = _linear_problem(classes=2)
    with pytest.raises(ValueError, match="supports Linf and L2, not 'L1'"):
        SquareAttack(eps=0.5, norm="L1")(model, images, labels)


def test_square_l2_window_pattern_and_side() -> None:
    pattern = window_pattern(5)
    assert pattern.norm() == pytest.approx(1.0)
    top, bottom = pattern[:2], pattern[2:]  # a positive blob over a negative one
    assert (top > 0).all() and (bottom < 0).all()
    assert top.norm() == pytest.approx(bottom.norm())  # of equal energy, though 2 rows vs 3
    assert top.abs().argmax() == 7 and bottom.abs().argmax() == 7  # each peaks at its centre
    assert torch.equal(window_pattern(5, transpose=True), pattern.T)
    # Odd, at least 3, at most the image: 8x8 windows shrink 7, 5, 5, 3, 3, ...
    assert [l2_window_side(0.8 / 2**k, 8, 8) for k in range(5)] == [7, 5, 5, 3, 3]
    assert l2_window_side(0.8, 2, 2) == 2


def test_square_l2_stays_on_the_sphere_away_from_the_box_edges() -> None:
    # Each L2 update moves mass between two windows without changing the total: when [0,1]
    # clips nothing, every perturbation, fooling or not, has norm exactly eps.
    model, images, labels = _linear_problem(classes=2, side=8)
    adversarial = SquareAttack(eps=0.2, norm="L2", n_queries=50)(model, images, labels)
    distance = threat_model("L2").norm(adversarial - images)
    assert torch.allclose(distance, torch.full_like(distance, 0.2), atol=1e-5)


def test_square_l2_brackets_the_known_answer_on_a_binary_linear_model() -> None:
    # The exact L2 robust set is out of reach of random search (unlike the Linf one, whose
    # optimum is a corner Square samples directly): the optimum is one direction, -w/||w||,
    # and Square L2 only approaches it (efficiency cos(delta, -w) ~ 0.7-0.8 after 1,000-3,000
    # queries on 8x8 random weights), so points just inside the boundary survive. On the 2x2
    # problem it cannot even approach it: the only window is the whole image and the patterns
    # span 2 of the 4 dimensions, so the start's direction in the other 2 never changes. So:
    # on 8x8 images (the ball, eps <= 0.3, stays inside [0, 1]) Square L2 never fools a point
    # the closed form calls robust, and fools every point it could fool with 60% of the budget.
    eps = 0.2
    model, images, labels = _linear_problem(classes=2, side=8)
    ratio = _l2_margin_ratio(model, images, labels, eps)
    expected = _closed_form_robust_l2(model, images, labels, eps)
    assert 0.1 < expected.float().mean() < 0.9  # a test where the attack has work to do
    assert images.min() - eps >= 0 and images.max() + eps <= 1  # the closed form holds
    adversarial = SquareAttack(eps=eps, norm="L2", n_queries=1000)(model, images, labels)
    with torch.no_grad():
        survived = model(adversarial).argmax(1) == labels
    assert survived[expected].all()  # sound: never beyond the closed form
    assert not survived[ratio < 0.6].any()  # and close to it


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_every_preset_builds_at_the_threat_model(preset: str, norm: str) -> None:
    suite = build_suite(preset, norm, 0.1)
    assert {"fgsm", "pgd", "apgd_ce"} <= set(suite)
    assert all(attack.norm == norm and attack.eps == 0.1 for attack in suite.values())
    assert ("square" in suite) == (preset != "quick")
    assert ("fab_t" in suite) == (preset != "quick")
    assert ("autoattack" in suite) == (preset == "thorough")
    assert {"pgd_short", "pgd"} <= set(suite)  # the steps-and-restarts monotonicity check
    assert ("cw_l2" in suite) == (norm == "L2" and preset != "quick")


def test_cw_finds_the_minimal_l2_distance_of_a_linear_model() -> None:
    # The smallest L2 perturbation that flips a binary linear classifier is the distance to
    # its hyperplane, margin / ||w_y - w_other||; no attack can go below it.
    model, images, labels = _linear_problem(classes=2)
    weight = model.linear.weight
    difference = weight[labels] - weight[1 - labels]
    closed_form = (difference * images.flatten(1)).sum(1) / difference.norm(dim=1)
    reachable = closed_form < 0.25  # from [0.3, 0.7], the hyperplane lies inside [0, 1]
    _, distance = CarliniWagnerL2(eps=0.2).minimal(model, images, labels)
    relative = (distance[reachable] - closed_form[reachable]) / closed_form[reachable]
    assert torch.isfinite(distance[reachable]).all()
    assert relative.min() >= -1e-3  # never below the true minimum
    assert relative.median() < 0.01


class _Untouchable(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a transfer attack must not query the target model")


def test_transfer_attack_uses_only_the_surrogate(trained_digits_model) -> None:
    from attacks.transfer import TransferAttack

    model, images, labels = trained_digits_model
    attack = TransferAttack(source=model, attack=PGD(eps=0.1, steps=10))
    adversarial = attack(_Untouchable(), images, labels)
    assert threat_model("Linf").norm(adversarial - images).max() <= 0.1 + 1e-6
    with torch.no_grad():  # crafted on the surrogate, so it transfers perfectly to itself
        assert (model(adversarial).argmax(1) == labels).float().mean() < 0.6
    suite = build_suite("standard", "Linf", 0.1, surrogate=model)
    assert suite["transfer"].source is model
    assert "transfer" not in build_suite("quick", "Linf", 0.1, surrogate=model)
