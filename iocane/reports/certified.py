"""The certified band as people read it: what is proven beside what was measured.

``metrics/evaluate.json``'s ``certified`` (``iocane.robustness.certification`` computes it) holds
each bound method's certified accuracy per model, the hardened model's best (the proven lower
bound), the suite's worst case (the measured upper bound), the gap, a verifier's message for a
model it cannot bound, the certified points the suite broke, and randomized smoothing's figures.
This module turns it into what ``templates/certified.md.j2`` (the report and both model cards),
the Prefect table, the registry's tags and the MLflow metrics show. The same document is in the
evaluation a report renders from and in the metrics file a card renders from.
"""

from __future__ import annotations

from dataclasses import dataclass

METHOD_NAMES = {"ibp": "IBP (Gowal et al. 2018)", "crown": "CROWN (Zhang et al. 2018)"}
TAG_LIMIT = 4000  # what an MLflow tag value holds, with room to spare


@dataclass(frozen=True)
class BandRow:
    """One row of the band's table: a figure of the natural and the evaluated model."""

    figure: str
    natural: str
    hardened: str


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def band_rows(certified: dict, natural_attacked: float | None) -> list[BandRow]:
    """The band's table: the best certified figure (the proven lower bound), each method's, the
    attacked worst case (the measured upper bound) and the gap between the two."""
    methods = list(certified["bounds"])
    rows = []
    if methods:
        rows.append(
            BandRow(
                f"certified accuracy, proven (best of {', '.join(methods)})",
                _cell(certified["natural_certified_accuracy"]),
                _cell(certified["certified_accuracy"]),
            )
        )
        rows += [
            BandRow(
                f"certified by {METHOD_NAMES.get(method, method)}",
                _cell(figures["natural"]),
                _cell(figures["hardened"]),
            )
            for method, figures in certified["bounds"].items()
        ]
    rows.append(
        BandRow(
            "attacked accuracy, measured (worst case of the suite)",
            _cell(natural_attacked),
            _cell(certified["attacked_accuracy"]),
        )
    )
    if methods:
        natural_gap = _gap(natural_attacked, certified["natural_certified_accuracy"])
        rows.append(BandRow("gap (measured - proven)", natural_gap, _cell(certified["gap"])))
    return rows


def _gap(attacked: float | None, proven: float | None) -> str:
    return "n/a" if attacked is None or proven is None else f"{attacked - proven:.4f}"


def smoothing_rows(smoothing: dict) -> list[BandRow]:
    """Randomized smoothing's certified accuracy at each L2 radius, natural beside hardened."""
    natural = smoothing["natural"] or {}
    return [
        BandRow(radius, _cell(natural.get(radius)), _cell(value))
        for radius, value in smoothing["hardened"].items()
    ]


def certified_context(certified: dict | None, natural_attacked: float | None = None) -> dict:
    """What ``templates/certified.md.j2`` reads (``band`` is ``None``: no certification, no
    section). ``natural_attacked`` is the natural model's worst case, where there is one."""
    if not certified:
        return {"band": None}
    smoothing = certified.get("smoothing")
    band = {
        "norm": certified["norm"],
        "eps": f"{certified['eps']:g}",
        "rows": band_rows(certified, natural_attacked),
        "proven": None
        if certified["certified_accuracy"] is None
        else f"{certified['certified_accuracy']:.1%}",
        "proven_figure": None
        if certified["certified_accuracy"] is None
        else f"{certified['certified_accuracy']:.4f}",
        "measured": f"{certified['attacked_accuracy']:.1%}",
        "methods": list(certified["bounds"]),
        "unsupported": certified.get("unsupported"),
        "natural_unsupported": certified.get("natural_unsupported"),
        "broken": certified.get("broken_certified", 0),
        "seconds": f"{sum(f['seconds'] for f in certified['bounds'].values()):.1f}",
        "smoothing": None
        if not smoothing
        else {
            "sigma": f"{smoothing['sigma']:g}",
            "n0": smoothing["n0"],
            "n": smoothing["n"],
            "alpha": f"{smoothing['alpha']:g}",
            "abstained": f"{smoothing['abstained']:.1%}",
            "seconds": f"{smoothing['seconds']:.1f}",
            "rows": smoothing_rows(smoothing),
        },
    }
    return {"band": band}


def band_text(certified: dict | None) -> str | None:
    """``0.4500-0.6100`` (proven to measured), or why nothing is proven; ``None`` without a
    certification. The version tag ``certified_band``, cut to fit a tag."""
    if not certified:
        return None
    proven = certified["certified_accuracy"]
    if proven is not None:
        return f"{proven:.4f}-{certified['attacked_accuracy']:.4f}"
    why = certified.get("unsupported") or "no bound method run"
    text = f"not certified ({why})"
    return text if len(text) <= TAG_LIMIT else text[: TAG_LIMIT - 4] + " ..."


def certified_tags(certified: dict | None) -> dict[str, str]:
    """The registry's version tags ``certified_accuracy`` and ``certified_band`` (none without a
    certification; ``certified_accuracy`` empty where nothing is proven)."""
    if not certified:
        return {}
    proven = certified["certified_accuracy"]
    return {
        "certified_accuracy": "" if proven is None else f"{proven:.6f}",
        "certified_band": band_text(certified) or "",
    }


def certified_metrics(certified: dict | None) -> dict[str, float | None]:
    """The MLflow metrics: ``certified_accuracy`` (the best), ``certified_accuracy/<method>``,
    the natural model's under ``natural/``, and smoothing's
    ``smoothing/certified_accuracy/r<radius>`` (``finite_metrics`` leaves ``None`` out)."""
    if not certified:
        return {}
    metrics: dict[str, float | None] = {
        "certified_accuracy": certified["certified_accuracy"],
        "natural/certified_accuracy": certified["natural_certified_accuracy"],
        "certified_gap": certified["gap"],
        "broken_certified": float(certified.get("broken_certified", 0)),
    }
    for method, figures in certified["bounds"].items():
        metrics[f"certified_accuracy/{method}"] = figures["hardened"]
        metrics[f"natural/certified_accuracy/{method}"] = figures["natural"]
    smoothing = certified.get("smoothing") or {}
    for radius, value in (smoothing.get("hardened") or {}).items():
        metrics[f"smoothing/certified_accuracy/r{radius}"] = value
        metrics[f"natural/smoothing/certified_accuracy/r{radius}"] = (
            smoothing.get("natural") or {}
        ).get(radius)
    return metrics


def certified_table_rows(certified: dict | None) -> list[dict]:
    """Rows of the Prefect ``robustness-metrics`` table, hardened beside natural."""
    if not certified:
        return []
    where = f"{certified['norm']} eps {certified['eps']:g}"
    rows = [
        {
            "metric": f"certified_accuracy ({where}, proven; best of bounds)",
            "hardened": certified["certified_accuracy"],
            "natural": certified["natural_certified_accuracy"],
        }
    ]
    rows += [
        {
            "metric": f"certified_accuracy/{method} ({where})",
            "hardened": figures["hardened"],
            "natural": figures["natural"],
        }
        for method, figures in certified["bounds"].items()
    ]
    gap = {"metric": "certified_gap (attacked - proven)", "hardened": certified["gap"]}
    rows.append({**gap, "natural": None})
    smoothing = certified.get("smoothing") or {}
    for radius, value in (smoothing.get("hardened") or {}).items():
        rows.append(
            {
                "metric": f"smoothing/certified_accuracy/r{radius} (L2, sigma "
                f"{smoothing['sigma']:g})",
                "hardened": value,
                "natural": (smoothing.get("natural") or {}).get(radius),
            }
        )
    return rows
