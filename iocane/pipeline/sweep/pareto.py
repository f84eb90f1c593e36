"""The Pareto front of the sweep's points: clean against worst-case robust accuracy, the points
no other point beats in both."""

from __future__ import annotations


def pareto_front(rows: list[dict]) -> set[str]:
    """Points no other point beats in both clean and robust accuracy. Points whose evaluation
    raised trust flags take no part: their robust accuracy is not trusted."""
    trusted = [row for row in rows if not row["trust_flags"]]

    def dominated(row: dict) -> bool:
        return any(
            other["clean_accuracy"] >= row["clean_accuracy"]
            and other["robust_accuracy"] >= row["robust_accuracy"]
            and (
                other["clean_accuracy"] > row["clean_accuracy"]
                or other["robust_accuracy"] > row["robust_accuracy"]
            )
            for other in trusted
        )

    return {row["point"] for row in trusted if not dominated(row)}


def mark_pareto(rows: list[dict]) -> set[str]:
    """Set each row's ``pareto`` column; returns the front."""
    front = pareto_front(rows)
    for row in rows:
        row["pareto"] = row["point"] in front
    return front
