"""Perceptual alignment: gradient maps and targeted images of the right shapes, inside the large
eps ball, for both models (``tests/unit/reports/test_figures.py`` draws the figure)."""

from __future__ import annotations

import torch

from attacks.threat import threat_model
from iocane.robustness.alignment import (
    ALIGNMENT_IMAGES,
    LARGE_EPS_FACTOR,
    gradient_maps,
    perceptual_alignment,
    targeted_images,
)


def test_gradient_maps_have_the_images_shape(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    maps = gradient_maps(model, images[:5], labels[:5])
    assert maps.shape == images[:5].shape
    assert maps.abs().flatten(1).amax(1).gt(0).all()  # a gradient for every image


def test_targeted_images_stay_in_the_ball_and_reach_their_targets(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    targets = (labels[:20] + 1) % 10
    for norm, eps in (("Linf", 0.4), ("L2", 3.0)):
        moved = targeted_images(model, images[:20], targets, norm, eps)
        assert moved.shape == images[:20].shape
        assert moved.min() >= 0 and moved.max() <= 1
        assert threat_model(norm).norm(moved - images[:20]).max() <= eps * (1 + 1e-4)
        with torch.no_grad():
            reached = (model(moved).argmax(1) == targets).float().mean()
        assert reached >= 0.9  # a natural model is easy to steer at 4x eps


def test_both_models_are_steered_towards_the_next_class(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    alignment = perceptual_alignment(
        {"natural": model, "hardened": model}, images, labels, 10, "Linf", 0.1
    )
    assert len(alignment.images) == ALIGNMENT_IMAGES and LARGE_EPS_FACTOR == 4.0
    assert alignment.large_eps == LARGE_EPS_FACTOR * 0.1
    assert torch.equal(alignment.targets, (labels[:ALIGNMENT_IMAGES] + 1) % 10)
    assert list(alignment.reached) == ["natural", "hardened"]  # the figure's order
    assert 0 <= alignment.reached["natural"] <= 1
    for name in ("natural", "hardened"):
        assert alignment.gradients[name].shape == alignment.images.shape
        assert alignment.moved[name].shape == alignment.images.shape
        hits = (alignment.predicted[name] == alignment.targets).float().mean().item()
        assert hits == alignment.reached[name]
