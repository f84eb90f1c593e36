"""The sweep's ranking: the most robust in the worst case among the points above a clean-accuracy
floor and without trust flags; ties go to the higher clean accuracy, then the shorter training."""

from __future__ import annotations

from iocane.base.config import Config


def min_clean_accuracy(config: Config) -> float:
    """The ranking's clean floor: ``sweep.min_clean_accuracy``, else the gate's (0 when the
    gate has no absolute floor either)."""
    floor = config.sweep.min_clean_accuracy
    if floor is None:
        floor = config.gate.min_clean_accuracy
    return 0.0 if floor is None else floor


def _seconds(row: dict) -> float:
    """A point's training time for breaking ties: the train stage's own wall time, else the
    point's whole time."""
    seconds = row.get("train_seconds")
    return seconds if seconds is not None else 60 * row.get("minutes", 0.0)


def rank(rows: list[dict], min_clean: float) -> list[dict]:
    """Set each row's ``rank`` (1 = the most robust in the worst case among the points with
    clean accuracy at least ``min_clean`` and no trust flags; ties go to the higher clean
    accuracy, then the shorter training) or say in ``unranked_because`` why it has none.
    Returns the rows ranked first, then the unranked ones, the most robust first."""
    ranked = []
    for row in rows:
        reasons = []
        if row["clean_accuracy"] < min_clean:
            reasons.append(f"clean {row['clean_accuracy']:.4f} < {min_clean:g}")
        if row["trust_flags"]:
            reasons.append(f"{row['trust_flags']} trust flag(s)")
        row["rank"], row["unranked_because"] = None, "; ".join(reasons)
        if not reasons:
            ranked.append(row)
    ranked.sort(key=lambda r: (-r["robust_accuracy"], -r["clean_accuracy"], _seconds(r)))
    for position, row in enumerate(ranked, start=1):
        row["rank"] = position
    unranked = sorted((r for r in rows if r["rank"] is None), key=lambda r: -r["robust_accuracy"])
    return [*ranked, *unranked]
