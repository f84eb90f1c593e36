"""The robustness report (``reports/robustness.md``): what a person reads about an evaluation.

The threat model, clean and worst-case robust accuracy of the hardened and the natural model with
each attack's own figure, the empirical statement they support (``measured_statement``, which the
model card states too: a measurement, an upper bound, never a guarantee), the trust flags, what is
proven (the certified band, ``iocane.reports.certified``), the threat profile beyond the training
threat (``iocane.reports.threats``), and the figures (``iocane.reports.figures``) linked beside it.
The text is ``templates/report.md.j2`` (the statement: ``templates/measured.md.j2``); this module
computes what it reads.
"""

from __future__ import annotations

from iocane.reports.certified import certified_context
from iocane.reports.templating import macro, render
from iocane.reports.threats import profile_context
from iocane.robustness.alignment import LARGE_EPS_FACTOR
from iocane.robustness.evaluation import cw_text

# What the report and the figures call the two models of a run. ``iocane evaluate`` on a model
# iocane did not train names them otherwise (``evaluation["labels"]``).
RUN_LABELS = {"hardened": "hardened", "natural": "natural (warmup)"}


def measured_statement(
    robust_accuracy: float, norm: str, eps: float, attacks: list[str], subject: str = "hardened"
) -> str:
    """The empirical statement an attacked robust accuracy supports, and no more (one line, the
    report's and the model cards'): what was measured, not what is proven."""
    statement = macro("measured.md.j2", "measured")
    return str(statement(subject, f"{robust_accuracy:.1%}", norm, f"{eps:g}", attacks))


def render_report(evaluation: dict) -> str:
    """The markdown robustness report (also the Prefect artifact ``robustness-report``). Without
    a natural model (``evaluation["natural"]`` is ``None``) the table has the model's row only."""
    return render("report.md.j2", **report_context(evaluation))


def report_context(evaluation: dict) -> dict:
    """What ``templates/report.md.j2`` reads, the numbers formatted as the report writes them."""
    hardened, natural = evaluation["hardened"], evaluation["natural"]
    labels = {**RUN_LABELS, **evaluation.get("labels", {})}
    attacks = list(hardened["per_attack"])
    rows = [
        _model_row(labels[key], result, attacks)
        for key, result in (("hardened", hardened), ("natural", natural))
        if result is not None
    ]
    return {
        "norm": hardened["norm"],
        "eps": f"{hardened['eps']:g}",
        "n_samples": hardened["n_samples"],
        "dataset": evaluation["dataset"],
        "preset": evaluation["preset"],
        "attacks": attacks,
        "rows": rows,
        "measured": measured_statement(
            hardened["robust_accuracy"],
            hardened["norm"],
            hardened["eps"],
            attacks,
            subject=labels["hardened"],
        ),
        "flags": hardened["flags"],
        "cw_flags": hardened.get("cw_flags", []),
        "cross_checks": list(hardened.get("broken_only_by_reference", {}).items()),
        "cw": _cw_context(hardened, natural),
        "hardened_label": labels["hardened"],
        "with_natural": natural is not None,
        "large_eps_factor": f"{LARGE_EPS_FACTOR:g}",
        "targets_reached": [
            f"{name} {share:.0%}"
            for name, share in evaluation.get("alignment_targets_reached", {}).items()
        ],
        **profile_context(evaluation.get("threats")),
        "profile_columns": (labels["natural"], labels["hardened"]),
        "profile_figure": "../plots/threat_profile.png",
        **certified_context(
            evaluation.get("certified"), None if natural is None else natural["robust_accuracy"]
        ),
        "subject": labels["hardened"],
    }


def _model_row(label: str, result: dict, attacks: list[str]) -> dict:
    """A model's row of the report's table, one cell per attack of the header: ``n/a`` for an
    attack this model did not face (transfer from the natural model runs against the hardened
    one only), as the model card writes it."""
    per_attack = result["per_attack"]
    return {
        "label": label,
        "clean": f"{result['clean_accuracy']:.4f}",
        "robust": f"{result['robust_accuracy']:.4f}",
        "cells": [
            "n/a" if per_attack.get(name) is None else f"{per_attack[name]:.4f}" for name in attacks
        ],
    }


def _cw_context(hardened: dict, natural: dict | None) -> dict | None:
    """The C&W distance sentence's values (presets above ``quick``; ``None`` without C&W): the
    medians, "not found" where more than half the points were, and the L2 curve's
    half-accuracy eps they were checked against (``None`` where the curve never got there)."""
    if "cw_median_l2" not in hardened:
        return None
    half_eps = hardened.get("l2_half_accuracy_eps")
    return {
        "hardened": cw_text(hardened),
        "natural": cw_text(natural) if natural is not None else None,
        "half_eps": f"{half_eps:.3f}" if half_eps is not None else None,
    }
