"""C&W's distance summary (an honest median, the share not found, the ceiling) and the trust
check that compares it with the run's own L2 accuracy-vs-eps curve."""

from __future__ import annotations

import math

import pytest
import torch

from iocane.robustness.checks import cw_curve_flags, half_accuracy_eps
from iocane.robustness.evaluation import cw_distance_summary, cw_text

INF = float("inf")


def test_not_found_points_count_as_beyond_every_found_one() -> None:
    # 2 of 5 not found: the median is the third-smallest, a found one, not the median of the 3.
    summary = cw_distance_summary(torch.tensor([0.5, INF, 0.2, INF, 0.9]), 1e6)
    assert summary == {
        "cw_median_l2": pytest.approx(0.9),
        "cw_not_found_share": pytest.approx(0.4),
        "cw_points": 5,
        "cw_max_const": 1e6,
    }
    assert cw_text(summary) == "0.900 (40% of points not found with c <= 1e+06)"


def test_the_median_is_null_when_most_points_are_not_found() -> None:
    summary = cw_distance_summary(torch.tensor([0.5, INF, INF, INF]), 1e6)
    assert summary["cw_median_l2"] is None
    assert summary["cw_not_found_share"] == pytest.approx(0.75)
    assert cw_text(summary) == "not found (75% of points not found with c <= 1e+06)"


def test_all_found_reads_as_before_and_no_points_is_not_a_number() -> None:
    summary = cw_distance_summary(torch.tensor([0.3, 0.1, 0.2]), 1e6)
    assert summary["cw_median_l2"] == pytest.approx(0.2) and summary["cw_not_found_share"] == 0
    assert cw_text(summary) == "0.200"
    empty = cw_distance_summary(torch.tensor([]), 1e6)
    assert empty["cw_median_l2"] is None and empty["cw_points"] == 0
    assert all(not isinstance(v, float) or math.isfinite(v) for v in empty.values())


def test_half_accuracy_eps_interpolates_on_the_grid() -> None:
    grid = [0.0, 0.5, 1.0, 1.5, 2.0]
    # clean 0.8, half 0.4: crossed between 1.0 (0.6) and 1.5 (0.2), halfway
    assert half_accuracy_eps(grid, [0.8, 0.7, 0.6, 0.2, 0.1]) == pytest.approx(1.25)
    assert half_accuracy_eps(grid, [0.8, 0.7, 0.4, 0.2, 0.1]) == pytest.approx(1.0)
    assert half_accuracy_eps(grid, [0.8, 0.8, 0.7, 0.6, 0.5]) is None  # never falls to half
    assert half_accuracy_eps(grid, [0.0, 0.0, 0.0, 0.0, 0.0]) is None  # nothing to halve


def _summary(median: float | None, share: float) -> dict:
    return {"cw_median_l2": median, "cw_not_found_share": share, "cw_max_const": 1e6}


def test_a_cw_median_beyond_the_curves_half_eps_is_flagged_with_both_numbers() -> None:
    (flag,) = cw_curve_flags(_summary(2.1, 0.2), 1.4)
    assert "2.100" in flag and "1.400" in flag and "too weak" in flag
    (flag,) = cw_curve_flags(_summary(None, 0.6), 1.4)
    assert "not found for 60% of the points (c up to 1e+06)" in flag and "1.400" in flag


def test_a_cw_median_within_the_half_eps_or_no_half_eps_raises_nothing() -> None:
    assert cw_curve_flags(_summary(1.2, 0.0), 1.4) == []
    assert cw_curve_flags(_summary(1.4, 0.1), 1.4) == []
    assert cw_curve_flags(_summary(None, 0.9), None) == []  # the curve never fell to half
