"""MLflow gets finite metrics only: None, NaN and infinities are left out and named."""

from __future__ import annotations

import logging

from iocane.registry.tracking import evaluation_metrics, finite_metrics


def test_non_finite_and_missing_metrics_are_left_out_and_named(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="iocane"):
        kept, skipped = finite_metrics(
            {"a": 0.5, "b": float("nan"), "c": float("inf"), "d": None, "e": 0}
        )
    assert kept == {"a": 0.5, "e": 0}
    assert skipped == ["b=nan", "c=inf", "d=None"]
    assert "b=nan, c=inf, d=None" in caplog.text


def test_cw_figures_are_logged_only_where_cw_ran() -> None:
    natural = {"clean_accuracy": 0.9, "robust_accuracy": 0.0, "attacks": {}}
    evaluation = {
        "clean_accuracy": 0.8,
        "robust_accuracy": 0.6,
        "natural": natural,
        "flags": [],
        "attacks": {},
        "cw_median_l2": None,
        "cw_not_found_share": None,
    }
    verdict = {"clean_drop": 0.1, "passed": True}
    assert "cw_median_l2" not in evaluation_metrics(evaluation, verdict)  # quick: no C&W
    evaluation.update(cw_median_l2=None, cw_not_found_share=0.7)
    kept, skipped = finite_metrics(evaluation_metrics(evaluation, verdict))
    assert kept["cw_not_found_share"] == 0.7 and skipped == ["cw_median_l2=None"]


def _evaluated_beside_a_natural_model() -> tuple[dict, dict]:
    """A small evaluation document with a natural model's figures, and a passed verdict."""
    natural = {"clean_accuracy": 0.9, "robust_accuracy": 0.0, "attacks": {}}
    evaluation = {
        "clean_accuracy": 0.8,
        "robust_accuracy": 0.6,
        "natural": natural,
        "flags": [],
        "attacks": {},
    }
    return evaluation, {"clean_drop": 0.1, "passed": True}


def test_the_threat_profile_is_logged_per_threat_and_model() -> None:
    evaluation, verdict = _evaluated_beside_a_natural_model()
    assert not any("threat" in key for key in evaluation_metrics(evaluation, verdict))
    evaluation["threats"] = {
        "l0": {"hardened": 0.41, "natural": 0.05},
        "corruptions": {"hardened": 0.7, "natural": None},  # no natural figure: not logged
    }
    kept, skipped = finite_metrics(evaluation_metrics(evaluation, verdict))
    threat_keys = {key: value for key, value in kept.items() if "threat" in key}
    assert threat_keys == {
        "threat_accuracy/l0": 0.41,
        "natural/threat_accuracy/l0": 0.05,
        "threat_accuracy/corruptions": 0.7,
    }
    assert skipped == ["natural/threat_accuracy/corruptions=None"]


def test_the_certified_band_is_logged_per_method_radius_and_model() -> None:
    evaluation, verdict = _evaluated_beside_a_natural_model()
    assert not any("certified" in key for key in evaluation_metrics(evaluation, verdict))
    evaluation["certified"] = {
        "bounds": {
            "ibp": {"hardened": 0.4, "natural": 0.0, "seconds": 1.0},
            "crown": {"hardened": 0.45, "natural": None, "seconds": 2.0},  # natural unsupported
        },
        "certified_accuracy": 0.45,
        "natural_certified_accuracy": 0.0,
        "attacked_accuracy": 0.6,
        "gap": 0.15,
        "broken_certified": 0,
        "smoothing": {"hardened": {"0.25": 0.5, "1": 0.1}, "natural": None},
    }
    kept, skipped = finite_metrics(evaluation_metrics(evaluation, verdict))
    assert {key: value for key, value in kept.items() if "certified" in key} == {
        "certified_accuracy": 0.45,
        "natural/certified_accuracy": 0.0,
        "certified_gap": 0.15,
        "broken_certified": 0.0,
        "certified_accuracy/ibp": 0.4,
        "natural/certified_accuracy/ibp": 0.0,
        "certified_accuracy/crown": 0.45,
        "smoothing/certified_accuracy/r0.25": 0.5,
        "smoothing/certified_accuracy/r1": 0.1,
    }
    assert skipped == [
        "natural/certified_accuracy/crown=None",
        "natural/smoothing/certified_accuracy/r0.25=None",
        "natural/smoothing/certified_accuracy/r1=None",
    ]
