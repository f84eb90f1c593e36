"""The robustness report: a table whose rows all have the header's cells, and what the attacked
figure supports (measured, never proven)."""

from __future__ import annotations

from iocane.reports.report import measured_statement, render_report


def _result(per_attack: dict[str, float]) -> dict:
    return {
        "clean_accuracy": 0.95,
        "robust_accuracy": min(per_attack.values()),
        "per_attack": per_attack,
        "flags": [],
        "norm": "Linf",
        "eps": 0.2,
        "n_samples": 100,
        "broken_only_by_reference": {},
    }


def _table(report: str) -> list[str]:
    return [line for line in report.splitlines() if line.startswith("|")]


def test_every_table_row_has_the_headers_cells_and_na_for_attacks_not_faced() -> None:
    evaluation = {
        "dataset": "digits",
        "preset": "standard",
        # transfer runs against the hardened model only; the natural model met eot_pgd alone
        "hardened": _result({"fgsm": 0.7, "pgd": 0.6, "transfer": 0.8}),
        "natural": _result({"fgsm": 0.1, "pgd": 0.0, "eot_pgd": 0.0}),
        "alignment_targets_reached": {"natural": 1.0, "hardened": 0.5},
    }
    header, rule, hardened, natural = _table(render_report(evaluation))
    cells = header.count("|")
    assert cells == 7 and [row.count("|") for row in (rule, hardened, natural)] == [cells] * 3
    assert hardened == "| hardened | 0.9500 | 0.6000 | 0.7000 | 0.6000 | 0.8000 |"
    assert natural == "| natural (warmup) | 0.9500 | 0.0000 | 0.1000 | 0.0000 | n/a |"


def test_the_measured_statement_states_the_worst_case_and_no_more() -> None:
    text = measured_statement(0.8123, "L2", 0.5, ["pgd", "square"])
    assert "at least **81.2%**" in text and "L2 perturbation up to eps = 0.5" in text
    assert "(per-sample worst case over pgd, square)" in text and "not a certificate" in text
    assert "guarantee" not in text and "proven" not in text
