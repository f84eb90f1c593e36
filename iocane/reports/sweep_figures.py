"""The sweep's figure: robust against clean accuracy, one dot per point, the Pareto front joined
(``iocane.reports.sweep_summary`` writes it as ``pareto.png`` beside the summary tables)."""

from __future__ import annotations

from pathlib import Path

from iocane.base.files import write_atomic


def _budget_label(budget: float | None) -> str:
    return "train.epochs" if not budget else f"budget {budget:g} min"


def plot_front(rows: list[dict], path: Path, threat: str) -> None:
    """Robust against clean accuracy, one dot per point, coloured by its training budget, the
    Pareto front joined and ringed, the ranking's first point starred. Points with trust flags
    are crosses (they take no part in the front or the ranking)."""
    from matplotlib.figure import Figure  # here: matplotlib is slow to import

    figure = Figure(figsize=(7.2, 5.4))
    axis = figure.subplots()
    budgets = sorted({row.get("budget_minutes") or 0 for row in rows})
    colours = {budget: f"C{index % 10}" for index, budget in enumerate(budgets)}
    labelled: set[float] = set()
    for row in rows:
        budget = row.get("budget_minutes") or 0
        point = (row["clean_accuracy"], row["robust_accuracy"])
        axis.scatter(
            *point,
            marker="x" if row["trust_flags"] else "o",
            color=colours[budget],
            label=_budget_label(budget) if budget not in labelled and len(budgets) > 1 else None,
        )
        labelled.add(budget)
        axis.annotate(row["point"], point, fontsize=6)
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["clean_accuracy"])
    axis.plot(
        [r["clean_accuracy"] for r in front],
        [r["robust_accuracy"] for r in front],
        "-o",
        color="black",
        markerfacecolor="none",
        markersize=11,
        label="Pareto front (trusted points)",
    )
    best = [row for row in rows if row.get("rank") == 1]
    if best:
        axis.scatter(
            best[0]["clean_accuracy"],
            best[0]["robust_accuracy"],
            marker="*",
            s=220,
            color="gold",
            edgecolor="black",
            zorder=3,
            label="rank 1 (most robust above the clean floor)",
        )
    axis.set_xlabel("clean accuracy")
    axis.set_ylabel(f"robust accuracy (worst case, {threat})")
    axis.set_title("Sweep: clean against robust accuracy (x: trust flags)")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left", fontsize=7)
    figure.tight_layout()
    write_atomic(path, lambda stream: figure.savefig(stream, dpi=110, format="png"))
