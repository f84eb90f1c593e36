"""Champion/challenger: who may hold ``champion``, decided from a version's evidence alone.

Pure rules, no MLflow: ``registry`` (a new version's alias) and ``iocane promote`` (a reviewer's
decision) both read a version's tags into ``Evidence`` and ask these functions.

- A version that failed the gate gets no alias and can never be promoted.
- A version whose evaluation raised trust flags can be ``challenger`` (when the gate was told to
  tolerate flags) but never ``champion``: its robustness figure is not trusted.
- Two versions judged under different threat models or eps are never compared: a robust
  accuracy at Linf 0.1 says nothing about one at L2 0.5.
- Otherwise a new passing version becomes ``champion`` when its worst-case robust accuracy is at
  least the champion's and its clean accuracy is not lower by more than
  ``registry.max_clean_regression``; else it is ``challenger``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Evidence:
    """What a registered version's tags say about it."""

    version: str
    gate: str  # passed | failed
    trust_flags: int
    threat_model: str
    eps: float
    clean_accuracy: float
    robust_accuracy: float

    @classmethod
    def from_tags(cls, version: str | int, tags: Mapping[str, str]) -> Evidence:
        def number(key: str) -> float:
            try:
                return float(tags[key])
            except (KeyError, ValueError):
                return math.nan  # missing evidence compares as nothing: never promotable

        return cls(
            version=str(version),
            gate=tags.get("gate", "missing"),
            trust_flags=int(tags.get("trust_flags", "0") or 0),
            threat_model=tags.get("threat_model", "missing"),
            eps=number("eps"),
            clean_accuracy=number("clean_accuracy"),
            robust_accuracy=number("robust_accuracy"),
        )

    @property
    def threat(self) -> str:
        return f"{self.threat_model} eps {self.eps:g}"


@dataclass(frozen=True)
class Decision:
    alias: str | None  # champion, challenger, or None
    reason: str


def comparable(a: Evidence, b: Evidence) -> bool:
    """Same threat model and eps: only then do robust accuracies mean the same thing."""
    return a.threat_model == b.threat_model and math.isclose(a.eps, b.eps)


def eligibility_problem(candidate: Evidence) -> str | None:
    """Why ``candidate`` can never be champion, or None."""
    if candidate.gate != "passed":
        return f"v{candidate.version} did not pass the gate (gate={candidate.gate})"
    if candidate.trust_flags:
        return (
            f"v{candidate.version}'s evaluation raised {candidate.trust_flags} trust flag(s): "
            "its robust accuracy is not trusted"
        )
    if math.isnan(candidate.robust_accuracy) or math.isnan(candidate.clean_accuracy):
        return f"v{candidate.version} has no clean or robust accuracy tag"
    return None


def comparison_problem(
    candidate: Evidence, champion: Evidence, max_clean_regression: float
) -> str | None:
    """Why ``candidate`` does not beat ``champion`` under the same threat model, or None."""
    if not comparable(candidate, champion):
        return (
            f"not compared: champion v{champion.version} was judged under {champion.threat}, "
            f"v{candidate.version} under {candidate.threat}"
        )
    if candidate.robust_accuracy < champion.robust_accuracy:
        return (
            f"robust accuracy {candidate.robust_accuracy:.4f} < champion v{champion.version}'s "
            f"{champion.robust_accuracy:.4f}"
        )
    drop = champion.clean_accuracy - candidate.clean_accuracy
    if drop > max_clean_regression + 1e-12:
        return (
            f"clean accuracy {candidate.clean_accuracy:.4f} is {drop:.4f} below champion "
            f"v{champion.version}'s {champion.clean_accuracy:.4f} "
            f"(registry.max_clean_regression {max_clean_regression:g})"
        )
    return None


def alias_for_new_version(
    candidate: Evidence, champion: Evidence | None, max_clean_regression: float
) -> Decision:
    """The alias a freshly registered version earns, and why."""
    if candidate.gate != "passed":
        return Decision(None, f"gate {candidate.gate}: nothing promoted")
    problem = eligibility_problem(candidate)
    if problem:
        return Decision(CHALLENGER, problem)
    if champion is None:
        return Decision(CHAMPION, "first version to pass the gate")
    problem = comparison_problem(candidate, champion, max_clean_regression)
    if problem:
        return Decision(CHALLENGER, problem)
    return Decision(
        CHAMPION,
        f"robust accuracy {candidate.robust_accuracy:.4f} >= champion v{champion.version}'s "
        f"{champion.robust_accuracy:.4f}, clean accuracy {candidate.clean_accuracy:.4f} within "
        f"{max_clean_regression:g} of its {champion.clean_accuracy:.4f}",
    )


def promotion_refusal(candidate: Evidence, champion: Evidence | None) -> str | None:
    """Why a reviewer may not make ``candidate`` champion by hand, or None. A reviewer may
    prefer a less robust or less accurate version (that is a judgement, recorded with its
    reason), but not a failed, flagged or incomparable one."""
    problem = eligibility_problem(candidate)
    if problem:
        return problem
    if champion is not None and not comparable(candidate, champion):
        return (
            f"v{candidate.version} was judged under {candidate.threat} and champion "
            f"v{champion.version} under {champion.threat}: they cannot be compared. A registered "
            "model's champion keeps one threat model; register the other threat model under "
            "another registry.model_name"
        )
    return None
