"""The threat profile as people read it: what the model withstands beyond its training threat.

``metrics/evaluate.json``'s ``threats`` (``iocane.robustness.threat_profile`` computes it) holds,
per threat, its budget, its measure (a per-sample worst case over the threat's attacks, or, for
the common corruptions, a mean), the natural and the hardened model's accuracy and each member's.
This module turns it into the rows the report, the model cards and the Prefect table show, and
the bars of the figure (``iocane.reports.figures.plot_threat_profile``). The same document is in
the evaluation a report renders from and in the metrics file a card renders from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThreatRow:
    """One threat of the profile, its accuracies formatted (``n/a`` without a natural model)."""

    threat: str
    budget: str
    measure: str
    natural: str
    hardened: str
    strongest: str  # the attack that left the fewest points standing on the hardened model


@dataclass(frozen=True)
class Bar:
    """One group of the figure: a label and the two models' accuracies."""

    label: str
    natural: float | None
    hardened: float


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _strongest(members: dict[str, float]) -> str:
    if not members:
        return "n/a"
    name = min(members, key=members.__getitem__)
    return f"{name} ({members[name]:.4f})"


def threat_rows(threats: dict) -> list[ThreatRow]:
    """The profile's table, in the params' order."""
    return [
        ThreatRow(
            threat=name,
            budget=threat["budget_text"],
            measure=threat["measure"],
            natural=_cell(threat["natural"]),
            hardened=_cell(threat["hardened"]),
            strongest=_strongest(threat["members"]["hardened"]),
        )
        for name, threat in threats.items()
    ]


def corruption_rows(threats: dict) -> list[dict[str, str]]:
    """Each corruption's accuracy (its mean over the severities), natural beside hardened: the
    common-corruptions benchmark reports each one as well as the mean."""
    corruptions = threats.get("corruptions")
    if not corruptions:
        return []
    natural = corruptions["members"]["natural"] or {}
    return [
        {"corruption": name, "natural": _cell(natural.get(name)), "hardened": _cell(value)}
        for name, value in corruptions["members"]["hardened"].items()
    ]


def threat_bars(evaluation: dict) -> list[Bar]:
    """The figure's groups, from an evaluation (``ModelsEvaluation.evaluation``): clean accuracy,
    the threat the model was evaluated at by the main suite (measured), its certified accuracy
    where ``evaluate.certify`` proved one (the band's lower edge, beside the measured upper one),
    then every threat of the profile (a profile entry for that same threat is not drawn twice)."""
    hardened, natural = evaluation["hardened"], evaluation["natural"] or {}
    norm, eps = hardened["norm"], hardened["eps"]
    bars = [
        Bar("clean", natural.get("clean_accuracy"), hardened["clean_accuracy"]),
        Bar(f"{norm}\neps {eps:g}", natural.get("robust_accuracy"), hardened["robust_accuracy"]),
    ]
    certified = evaluation.get("certified") or {}
    if certified.get("certified_accuracy") is not None:
        bars.append(
            Bar(
                f"{norm} eps {eps:g}\nproven",
                certified["natural_certified_accuracy"],
                certified["certified_accuracy"],
            )
        )
    for name, threat in (evaluation.get("threats") or {}).items():
        if name == norm.lower() and threat["budget"] == eps:
            continue  # the main suite's threat, drawn already
        bars.append(Bar(f"{name}\n{threat['budget_text']}", threat["natural"], threat["hardened"]))
    return bars


def profile_tag(threats: dict | None) -> str:
    """The profile as one line for a registry tag (``iocane review`` shows it), e.g.
    ``l0 (2 pixels) 0.6111; spatial (rotations up to 15 deg, shifts up to 1 px) 0.7028``; empty
    without a profile. Cut to fit an MLflow tag."""
    text = "; ".join(
        f"{name} ({threat['budget_text']}) {threat['hardened']:.4f}"
        for name, threat in (threats or {}).items()
    )
    return text if len(text) <= 4000 else text[:3996] + " ..."


def profile_context(threats: dict | None) -> dict:
    """What ``templates/threat_profile.md.j2`` reads (empty rows: no profile, no section)."""
    threats = threats or {}
    return {"threat_rows": threat_rows(threats), "corruption_rows": corruption_rows(threats)}
