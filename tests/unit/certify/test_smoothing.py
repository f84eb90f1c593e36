"""Randomized smoothing (``iocane.certify.smoothing``) on models whose class probabilities
under Gaussian noise are known in closed form: a threshold on one pixel puts ``x + noise`` in
class 1 with probability ``Phi((x0 - threshold) / sigma)``, so Cohen et al.'s radius
``sigma * Phi^-1(p_A)`` is known before sampling."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm
from torch import nn

from iocane.certify.smoothing import (
    ABSTAIN,
    clopper_pearson_lower,
    smoothed_certify,
    smoothed_predict,
)

SIGMA = 0.25
THRESHOLD = 0.5


class Threshold(nn.Module):
    """Class 1 where the first pixel is above ``THRESHOLD``, else class 0 (two logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []  # the mode of every forward pass

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        margin = images[:, 0, 0, 0] - THRESHOLD
        return torch.stack([-margin, margin], dim=1)


class Constant(nn.Module):
    """Always class ``label`` of three, whatever the input."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((len(images),), self.label), 3).float()


def _images(first_pixels: list[float]) -> torch.Tensor:
    """(N, 1, 2, 2) images in [0, 1]; only the first pixel matters to ``Threshold``."""
    images = torch.full((len(first_pixels), 1, 2, 2), 0.3)
    images[:, 0, 0, 0] = torch.tensor(first_pixels)
    return images


def _certify(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **options):
    arguments = {
        "sigma": SIGMA,
        "n0": 100,
        "n": 2000,
        "alpha": 0.001,
        "radii": [0.0, 0.25, 0.5, 0.75],
        "batch_size": 512,
        "seed": 0,
        **options,
    }
    return smoothed_certify(model, images, labels, **arguments)


def _true_radius(first_pixel: float) -> float:
    p_class_1 = norm.cdf((first_pixel - THRESHOLD) / SIGMA)
    return SIGMA * norm.ppf(max(p_class_1, 1 - p_class_1))


@pytest.mark.parametrize("k", [0, 1, 7, 500, 999, 1000])
@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_the_clopper_pearson_bound_is_the_exact_interval_of_the_binomial_test(
    k: int, alpha: float
) -> None:
    """One-sided at 1 - alpha is the lower end of the two-sided exact interval at 1 - 2 alpha."""
    interval = binomtest(k, 1000).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert clopper_pearson_lower(np.array([k]), 1000, alpha)[0] == pytest.approx(
        interval.low, abs=1e-12
    )


def test_a_model_that_never_changes_its_mind_gets_the_formula_exactly() -> None:
    """Every copy votes for the class, so k = n and p_A_lower = alpha^(1/n) exactly."""
    n, alpha = 1000, 0.001
    certificate = _certify(Constant(2), _images([0.1, 0.9]), torch.tensor([2, 0]), n=n)
    expected = SIGMA * norm.ppf(alpha ** (1 / n))
    assert certificate.predictions.tolist() == [2, 2]
    assert certificate.radii.tolist() == pytest.approx([expected, expected], rel=1e-9)
    assert certificate.certified_accuracy[0.25] == 0.5  # the second point's label is 0
    assert certificate.abstained == 0.0


def test_the_radius_is_cohens_formula_at_a_clopper_pearson_bound_of_a_plausible_count() -> None:
    """The radius is sigma * Phi^-1 of the bound of some count k of n (exactly), and that count
    is within four standard deviations of n * p_A: the sampling is the closed form's."""
    n, alpha = 2000, 0.001
    first_pixels = [0.6, 0.7, 0.3, 0.85]
    labels = torch.tensor([1, 1, 0, 1])
    certificate = _certify(Threshold(), _images(first_pixels), labels, n=n, alpha=alpha)
    bounds = clopper_pearson_lower(np.arange(n + 1), n, alpha)
    for pixel, prediction, radius in zip(
        first_pixels, certificate.predictions, certificate.radii, strict=True
    ):
        assert prediction == int(pixel > THRESHOLD)
        k = int(np.argmin(np.abs(SIGMA * norm.ppf(bounds) - float(radius))))
        assert float(radius) == pytest.approx(SIGMA * norm.ppf(bounds[k]), abs=1e-12)
        p_a = norm.cdf(_true_radius(pixel) / SIGMA)
        assert abs(k - n * p_a) <= 4 * np.sqrt(n * p_a * (1 - p_a)) + 1
        assert float(radius) < _true_radius(pixel) + 1e-9  # a lower bound, here at least


def test_with_many_samples_the_radius_approaches_the_true_one() -> None:
    first_pixels = [0.6, 0.3, 0.75]
    certificate = _certify(
        Threshold(),
        _images(first_pixels),
        torch.tensor([1, 0, 1]),
        n=200_000,
        batch_size=50_000,
    )
    truth = [_true_radius(pixel) for pixel in first_pixels]
    assert certificate.radii.tolist() == pytest.approx(truth, abs=0.01)
    assert all(radius < true for radius, true in zip(certificate.radii, truth, strict=True))


def test_a_top_class_below_one_half_abstains() -> None:
    """At the threshold each class has probability 1/2, and a point just past it (p_A 0.56)
    cannot be bounded above 1/2 from 200 copies: both abstain, with radius 0."""
    certificate = _certify(
        Threshold(), _images([THRESHOLD, 0.535, 0.9]), torch.tensor([1, 1, 1]), n=200
    )
    assert certificate.predictions.tolist() == [ABSTAIN, ABSTAIN, 1]
    assert certificate.radii[:2].tolist() == [0.0, 0.0] and certificate.radii[2] > 0
    assert certificate.abstained == pytest.approx(2 / 3)
    assert certificate.certified_accuracy[0.0] == pytest.approx(1 / 3)


def test_a_smaller_alpha_never_gives_a_larger_radius() -> None:
    images = _images(list(np.linspace(0.05, 0.95, 12)))
    labels = (images[:, 0, 0, 0] > THRESHOLD).long()
    radii = [
        _certify(Threshold(), images, labels, alpha=alpha).radii for alpha in (0.1, 0.01, 0.001)
    ]
    for looser, tighter in pairwise(radii):
        assert (tighter <= looser).all()
    assert (radii[-1] < radii[0]).any()


def test_the_same_seed_gives_the_same_certificate_and_another_seed_another() -> None:
    images = _images(list(np.linspace(0.3, 0.7, 9)))
    labels = (images[:, 0, 0, 0] > THRESHOLD).long()
    first = _certify(Threshold(), images, labels, n=300, seed=4)
    again = _certify(Threshold(), images, labels, n=300, seed=4)
    other = _certify(Threshold(), images, labels, n=300, seed=5)
    assert torch.equal(first.predictions, again.predictions)
    assert torch.equal(first.radii, again.radii)
    assert first.certified_accuracy == again.certified_accuracy
    assert not torch.equal(first.radii, other.radii)


def test_certified_accuracy_is_the_share_correct_at_each_radius_and_falls_with_it() -> None:
    images = _images(list(np.linspace(0.0, 1.0, 21)))
    labels = torch.tensor([0] * 10 + [1] * 11)
    labels[3] = 1  # one wrong label: never certified correct
    radii = [0.0, 0.1, 0.2, 0.3, 0.5, 1.0]
    certificate = _certify(Threshold(), images, labels, radii=radii)
    figures = [certificate.certified_accuracy[radius] for radius in radii]
    assert all(a >= b for a, b in pairwise(figures))
    for radius, figure in zip(radii, figures, strict=True):
        correct = (certificate.predictions == labels) & (certificate.radii >= radius)
        assert figure == pytest.approx(correct.double().mean().item())
    assert 0 < figures[3] < figures[0] < 1
    # No pixel is further than 0.5 = 2 sigma from the threshold: no true radius exceeds 0.5.
    assert figures[-2] == figures[-1] == 0


class Recording(Threshold):
    """``Threshold`` that keeps every noisy input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.inputs.append(images.clone())
        return super().forward(images)


def test_selection_and_estimation_draw_fresh_noise_n0_plus_n_copies_per_image() -> None:
    """Cohen's CERTIFY: the copies that count c_A are not the ones that chose it."""
    model = Recording()
    images = _images([0.7, 0.2])
    _certify(model, images, torch.tensor([1, 0]), n0=30, n=50, batch_size=16)
    seen = torch.cat(model.inputs)
    assert len(seen) == 2 * (30 + 50) and max(len(batch) for batch in model.inputs) == 16
    assert len(torch.unique(seen.flatten(1), dim=0)) == len(seen), "every copy its own noise"
    noise = seen - torch.cat([images[[0] * 30 + [1] * 30], images[[0] * 50 + [1] * 50]])
    assert noise.std().item() == pytest.approx(SIGMA, rel=0.1)


def test_the_model_is_sampled_in_eval_mode_and_left_in_its_mode_without_the_global_rng() -> None:
    model = Threshold().train()
    state = torch.get_rng_state()
    _certify(model, _images([0.7]), torch.tensor([1]), n=50)
    assert model.training and set(model.modes) == {False}
    assert torch.equal(torch.get_rng_state(), state)


def test_smoothed_predict_decides_clear_points_and_abstains_at_the_threshold() -> None:
    predictions = smoothed_predict(
        Threshold(), _images([0.1, THRESHOLD, 0.9]), sigma=SIGMA, n=1000, alpha=0.001,
        batch_size=256, seed=3,
    )  # fmt: skip
    assert predictions.tolist() == [0, ABSTAIN, 1]


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [("sigma", 0.0, "sigma"), ("n0", 0, "n0"), ("n", 0, "n"), ("alpha", 1.0, "alpha"),
     ("batch_size", 0, "batch_size"), ("radii", [-0.1], "radii")],
)  # fmt: skip
def test_bad_arguments_are_named(option: str, value: object, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        _certify(Threshold(), _images([0.7]), torch.tensor([1]), **{option: value})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda_the_certificate_is_the_cpu_formula_on_the_devices_noise() -> None:
    images = _images([0.6, 0.3, 0.9]).cuda()
    certificate = _certify(Threshold().cuda(), images, torch.tensor([1, 0, 1]).cuda())
    assert certificate.predictions.device.type == "cpu"
    assert certificate.predictions.tolist() == [1, 0, 1]
    again = _certify(Threshold().cuda(), images, torch.tensor([1, 0, 1]).cuda())
    assert torch.equal(certificate.radii, again.radii)
