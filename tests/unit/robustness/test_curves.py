"""Accuracy-vs-eps curves: the grids, and the two checks that read them."""

from __future__ import annotations

import math

import pytest

from iocane.robustness.curves import LARGE_LINF_EPS, accuracy_curve, curve_flags, eps_grids


def test_grids_follow_the_norm_convention() -> None:
    grids = eps_grids("Linf", 0.1, 64)
    assert grids["Linf"][0] == 0 and grids["Linf"][-1] == LARGE_LINF_EPS
    assert 0.1 in grids["Linf"]
    assert grids["L2"][grids["Linf"].index(0.1)] == pytest.approx(0.1 * math.sqrt(64) / 4)
    l2 = eps_grids("L2", 2.0, 784)
    assert 2.0 in l2["L2"] and l2["Linf"][4] == pytest.approx(2.0 * 4 / 28)


def test_a_healthy_curve_raises_no_flag() -> None:
    curves = {"Linf": {"eps": [0, 0.1, 0.5], "hardened": [0.99, 0.8, 0.0]}}
    assert curve_flags(curves, num_classes=10) == []


def test_accuracy_rising_with_eps_is_flagged() -> None:
    curves = {"L2": {"eps": [0, 0.5, 1.0], "hardened": [0.99, 0.5, 0.7]}}
    assert "rises with eps" in curve_flags(curves, num_classes=10)[0]


def test_accuracy_above_chance_at_large_eps_is_flagged() -> None:
    curves = {"Linf": {"eps": [0, 0.1, 0.5], "hardened": [0.99, 0.9, 0.6]}}
    assert "above chance" in curve_flags(curves, num_classes=10)[0]


def test_curve_of_a_real_model_falls_to_chance(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    grid = [0.0, 0.05, 0.1, 0.5]
    accuracies = accuracy_curve(model, images[:100], labels[:100], "Linf", grid, 10, seed=0)
    assert accuracies[0] > 0.8 and accuracies[-1] <= 0.15
    curves = {"Linf": {"eps": grid, "natural": accuracies, "hardened": accuracies}}
    assert curve_flags(curves, num_classes=10) == []
