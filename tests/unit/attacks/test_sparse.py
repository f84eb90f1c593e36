"""The L0 attacks (``attacks.sparse_rs``, ``attacks.pgd_l0``) and the L0 projection, on known
answers: a model one pixel provably cannot fool stays robust, a planted one-pixel trigger is
found by both attacks, more queries or steps never leave more points robust, and the pixel
budget holds, a pixel counting once over its channels."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from attacks import threat_model
from attacks.pgd_l0 import SparsePGD
from attacks.sparse_rs import SparseRS
from iocane.robustness.suite import evaluate_robustness

L0 = threat_model("L0")


def _attacks(eps: int, budget: int = 1) -> list:
    return [
        SparseRS(eps=eps, n_queries=100 * budget, seed=3),
        SparsePGD(eps=eps, steps=20 * budget, seed=3),
    ]


class SumVersusThreshold(nn.Module):
    """Class 0's logit is the sum of every channel of every pixel, class 1's a constant: on an
    all-ones image, a pixel changed lowers class 0's logit by at most its channel count."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        total = images.flatten(1).sum(dim=1)
        return torch.stack([total, torch.full_like(total, self.threshold)], dim=1)


class PlantedTrigger(nn.Module):
    """Class 0 by a margin of one, unless the pixel at ``row, column`` is lit: class 1's logit
    rises smoothly with that pixel's channels (a gradient for the white-box attack)."""

    def __init__(self, row: int, column: int) -> None:
        super().__init__()
        self.row, self.column = row, column

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        trigger = images[:, :, self.row, self.column].sum(dim=1)
        return torch.stack([torch.ones_like(trigger), 3.0 * trigger], dim=1)


def _robust_accuracy(model: nn.Module, adversarial: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(adversarial).argmax(1) == labels).float().mean().item()


@pytest.mark.parametrize("channels", [1, 3])
def test_a_model_one_pixel_cannot_fool_is_robust_at_one_pixel_and_broken_at_two(channels) -> None:
    # All ones: the sum is 16 * channels; one pixel removes at most `channels` of it, two remove
    # up to twice that, so a threshold half a channel below one pixel's worth splits the two.
    images = torch.ones(6, channels, 4, 4)
    labels = torch.zeros(6, dtype=torch.int64)
    model = SumVersusThreshold(16 * channels - channels - 0.5)
    for attack in _attacks(eps=1):
        assert _robust_accuracy(model, attack(model, images, labels), labels) == 1.0, attack.name
    for attack in _attacks(eps=2):
        adversarial = attack(model, images, labels)
        assert _robust_accuracy(model, adversarial, labels) == 0.0, attack.name
        assert L0.norm(adversarial - images).max() <= 2


@pytest.mark.parametrize("channels", [1, 3])
def test_both_attacks_find_a_planted_one_pixel_trigger(channels) -> None:
    images = torch.rand(8, channels, 5, 5, generator=torch.Generator().manual_seed(0)) * 0.2
    images[:, :, 3, 1] = 0.0  # the trigger is off on every clean image
    labels = torch.zeros(8, dtype=torch.int64)
    model = PlantedTrigger(3, 1)
    assert _robust_accuracy(model, images, labels) == 1.0
    for attack in _attacks(eps=1):
        adversarial = attack(model, images, labels)
        assert _robust_accuracy(model, adversarial, labels) == 0.0, attack.name
        changed = (adversarial != images).any(dim=1)
        assert changed.flatten(1).sum(dim=1).eq(1).all()  # only the trigger moved
        assert changed[:, 3, 1].all()


def test_more_queries_or_steps_never_leave_a_point_standing_that_fewer_broke(
    trained_digits_model,
) -> None:
    """Same seed, so the longer run extends the shorter one: at 3 pixels Sparse-RS swaps one
    pixel per iteration whatever its schedule, and sPGD's steps do not depend on their count."""
    model, images, labels = trained_digits_model
    images, labels = images[:32], labels[:32]
    for short, long in zip(_attacks(eps=3), _attacks(eps=3, budget=2), strict=True):
        with torch.no_grad():
            short_robust = model(short(model, images, labels)).argmax(1) == labels
            long_robust = model(long(model, images, labels)).argmax(1) == labels
        assert not (long_robust & ~short_robust).any(), short.name
        assert long_robust.sum() <= short_robust.sum()


def test_restarts_never_leave_a_point_standing_that_one_broke(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    images, labels = images[:32], labels[:32]
    for one, three in [
        (SparseRS(eps=2, n_queries=60, seed=1), SparseRS(eps=2, n_queries=60, seed=1, restarts=3)),
        (SparsePGD(eps=2, steps=10, seed=1), SparsePGD(eps=2, steps=10, seed=1, restarts=3)),
    ]:
        with torch.no_grad():
            one_robust = model(one(model, images, labels)).argmax(1) == labels
            three_robust = model(three(model, images, labels)).argmax(1) == labels
        assert not (three_robust & ~one_robust).any(), one.name


@pytest.mark.parametrize("eps", [1, 2, 5])
def test_the_pixel_budget_holds_on_colour_images_a_pixel_counting_once(eps) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5)).eval()
    images = torch.rand(16, 3, 8, 8)
    labels = model(images).argmax(1)  # every point starts clean-correct
    for attack in _attacks(eps=eps):
        adversarial = attack(model, images, labels)
        changed = (adversarial != images).any(dim=1).flatten(1).sum(dim=1)
        assert changed.max() <= eps and L0.norm(adversarial - images).max() <= eps
        assert adversarial.min() >= 0 and adversarial.max() <= 1
        # Several channels of one pixel moved somewhere: the budget counts pixels, not values.
        assert ((adversarial != images).sum(dim=1) > 1).any(), attack.name
        assert all(parameter.grad is None for parameter in model.parameters())


@pytest.mark.parametrize("attack_class", [SparseRS, SparsePGD])
def test_a_fractional_or_non_l0_budget_is_refused(attack_class) -> None:
    model = SumVersusThreshold(0.0)
    images, labels = torch.ones(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="eps"):
        attack_class(eps=1.5)(model, images, labels)
    with pytest.raises(ValueError, match="supports L0"):
        attack_class(eps=1, norm="Linf")(model, images, labels)
    # An integral float (params may hold 2.0) is a whole number of pixels.
    assert attack_class(eps=2.0)(model, images, labels).shape == images.shape


def _brute_force_projection(delta, eps, images):
    """The nearest point by enumeration: every set of at most eps pixels, clipped to the box."""
    clipped = (images + delta).clamp(0, 1) - images
    pixels = [(r, c) for r in range(delta.shape[2]) for c in range(delta.shape[3])]
    best, best_distance = None, float("inf")
    for size in range(eps + 1):
        for kept in itertools.combinations(pixels, size):
            candidate = torch.zeros_like(delta)
            for r, c in kept:
                candidate[:, :, r, c] = clipped[:, :, r, c]
            distance = (candidate - delta).pow(2).sum().item()
            if distance < best_distance - 1e-9:
                best, best_distance = candidate, distance
    return best


@pytest.mark.parametrize("eps", [0, 1, 2, 3])
def test_the_l0_projection_is_the_nearest_point_in_budget_and_box(eps) -> None:
    generator = torch.Generator().manual_seed(eps)
    for _ in range(5):
        images = torch.rand(1, 3, 2, 3, generator=generator)
        delta = torch.randn(1, 3, 2, 3, generator=generator)
        projected = L0.project(delta, eps, images)
        assert L0.norm(projected) <= eps
        assert (images + projected).min() >= 0 and (images + projected).max() <= 1
        expected = _brute_force_projection(delta, eps, images)
        torch.testing.assert_close(
            (projected - delta).pow(2).sum(), (expected - delta).pow(2).sum()
        )


def test_an_l0_evaluation_runs_only_the_l0_attacks_and_raises_no_flag(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    result = evaluate_robustness(
        model, images[:48], labels[:48], norm="L0", eps=3, preset="quick", device="cpu"
    )
    assert list(result.per_attack) == ["pgd_l0", "sparse_rs"]  # no Lp attack joins
    assert result.flags == []
    assert result.robust_accuracy <= min(result.per_attack.values()) < result.clean_accuracy
