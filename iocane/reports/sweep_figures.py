"""The sweep's figure: robust against clean accuracy, one dot per point, the Pareto front joined
(``flows/sweep.py`` writes it as ``pareto.png`` beside the summary)."""

from __future__ import annotations

from pathlib import Path

from iocane.files import write_atomic


def plot_front(rows: list[dict], path: Path, threat: str) -> None:
    """Robust against clean accuracy, one dot per point, the Pareto front joined. Points with
    trust flags are crosses (they take no part in the front)."""
    from matplotlib.figure import Figure  # here: matplotlib is slow to import

    figure = Figure(figsize=(6.4, 4.8))
    axis = figure.subplots()
    for row in rows:
        marker = "x" if row["trust_flags"] else "o"
        axis.scatter(row["clean_accuracy"], row["robust_accuracy"], marker=marker, color="C0")
        axis.annotate(row["point"], (row["clean_accuracy"], row["robust_accuracy"]), fontsize=7)
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["clean_accuracy"])
    axis.plot(
        [r["clean_accuracy"] for r in front],
        [r["robust_accuracy"] for r in front],
        "-",
        color="C1",
        label="Pareto front (trusted points)",
    )
    axis.set_xlabel("clean accuracy")
    axis.set_ylabel(f"robust accuracy (worst case, {threat})")
    axis.set_title("Sweep: clean against robust accuracy (x: trust flags)")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left")
    figure.tight_layout()
    write_atomic(path, lambda stream: figure.savefig(stream, dpi=110, format="png"))
