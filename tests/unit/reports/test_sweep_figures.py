"""The sweep's figure (iocane.reports.sweep_figures)."""

from __future__ import annotations

from pathlib import Path

from iocane.reports.sweep_figures import plot_front


def test_the_front_plot_is_a_png_even_with_flagged_points(tmp_path: Path) -> None:
    rows = [
        {"point": "a", "clean_accuracy": 0.9, "robust_accuracy": 0.3, "trust_flags": 0},
        {"point": "b", "clean_accuracy": 0.8, "robust_accuracy": 0.5, "trust_flags": 0},
        {"point": "c", "clean_accuracy": 0.99, "robust_accuracy": 0.9, "trust_flags": 1},
    ]
    for row in rows:
        row["pareto"] = row["point"] in {"a", "b"}
    path = tmp_path / "sweep" / "pareto.png"
    path.parent.mkdir()
    plot_front(rows, path, "Linf eps 0.1")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert list(path.parent.iterdir()) == [path], "written atomically: no temporary file left"


def test_the_plot_shows_budgets_and_the_ranked_first(tmp_path: Path) -> None:
    rows = [
        {"point": p, "clean_accuracy": c, "robust_accuracy": r, "trust_flags": 0}
        | {"budget_minutes": b, "pareto": True, "rank": k}
        for p, c, r, b, k in [("a", 0.9, 0.3, 2.5, 2), ("b", 0.8, 0.5, 5.0, 1)]
    ]
    rows.append({"point": "c", "clean_accuracy": 0.5, "robust_accuracy": 0.2, "trust_flags": 0})
    rows[-1].update(pareto=False, rank=None)  # no budget: trained for train.epochs
    path = tmp_path / "pareto.png"
    plot_front(rows, path, "Linf eps 0.1")
    assert path.read_bytes()[:4] == b"\x89PNG"
