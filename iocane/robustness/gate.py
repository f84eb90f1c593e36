"""The promotion gate: explicit thresholds on clean accuracy, its drop versus the natural
model, worst-case robust accuracy, certified accuracy (where set), and the trustworthiness of
the evaluation itself.

Only a model whose verdict passed can become ``champion``. The verdict is written to
``metrics/gate.json`` whatever it says, so a failed run still leaves its reasons behind.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from iocane.base.config import ConfigError, GateConfig

log = logging.getLogger("iocane")


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: float
    threshold: float
    passed: bool
    rule: str


def check_gate(gate: GateConfig, evaluation: dict) -> dict:
    """Judge an evaluation (the ``metrics/evaluate.json`` document) against the thresholds.

    A null absolute floor (``min_clean_accuracy``, ``min_robust_accuracy``) is no check at all;
    the relative ones compare with the natural model (iocane's warmup, or the user's own
    ``model.weights``): ``clean_drop`` always, ``robust_gain`` when ``min_robust_gain`` is set."""
    clean = evaluation["clean_accuracy"]
    robust = evaluation["robust_accuracy"]
    natural = evaluation["natural"]
    drop = natural["clean_accuracy"] - clean
    flags = evaluation.get("flags", [])
    checks = []
    if gate.min_clean_accuracy is not None:
        checks.append(_at_least("clean_accuracy", clean, gate.min_clean_accuracy))
    checks.append(
        GateCheck("clean_drop", drop, gate.max_clean_drop, drop <= gate.max_clean_drop, "<=")
    )
    if gate.min_robust_accuracy is not None:
        checks.append(_at_least("robust_accuracy", robust, gate.min_robust_accuracy))
    if gate.min_robust_gain is not None:
        checks.append(
            _at_least("robust_gain", robust - natural["robust_accuracy"], gate.min_robust_gain)
        )
    checks += _threat_checks(gate, evaluation)
    checks += _certified_check(gate, evaluation)
    if gate.require_trusted:
        checks.append(GateCheck("trust_flags", len(flags), 0, not flags, "<="))
    failed = [check for check in checks if not check.passed]
    reasons = [
        f"{check.name} = {check.value:.4f}, required {check.rule} {check.threshold:.4f}"
        + _versus(check.name, evaluation)
        for check in failed
    ]
    if gate.require_trusted and flags:
        reasons += [f"trust flag: {flag}" for flag in flags]
    return {
        "passed": not failed,
        "checks": [asdict(check) for check in checks],
        "reasons": reasons,
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "clean_drop": drop,
    }


def _threat_checks(gate: GateConfig, evaluation: dict) -> list[GateCheck]:
    """``threat_<name>``: the hardened model's accuracy under each threat of the profile that
    ``gate.min_threat_accuracy`` sets a floor for (the config holds those to the profile's)."""
    threats = evaluation.get("threats") or {}
    checks = []
    for name, threshold in gate.min_threat_accuracy.thresholds().items():
        if name not in threats:  # metrics of an evaluation that ran without that threat
            key = f"gate.min_threat_accuracy.{name}"
            raise ConfigError(
                f"{key}: the evaluation has no figure for threat {name} (evaluate again with "
                "it in evaluate.threats)",
                key=key,
            )
        checks.append(_at_least(f"threat_{name}", threats[name]["hardened"], threshold))
    return checks


def _certified_check(gate: GateConfig, evaluation: dict) -> list[GateCheck]:
    """``certified``: the hardened model's proven accuracy (the best of its bounds) against
    ``gate.min_certified_accuracy``; a model nothing is proven about (the verifier cannot bound
    it) has 0 proven."""
    if gate.min_certified_accuracy is None:
        return []
    certified = evaluation.get("certified") or {}
    if not certified.get("bounds"):  # metrics of an evaluation that certified nothing
        key = "gate.min_certified_accuracy"
        raise ConfigError(
            f"{key}: the evaluation has no certified figure (evaluate again with "
            "evaluate.certify.bounds)",
            key=key,
        )
    proven = certified["certified_accuracy"]
    return [_at_least("certified", 0.0 if proven is None else proven, gate.min_certified_accuracy)]


def _versus(name: str, evaluation: dict) -> str:
    """A relative check's reason names the two figures it compared; a threat's, the natural
    model's figure beside it where there is one."""
    if name == "certified":
        certified = evaluation["certified"]
        if certified["certified_accuracy"] is None:
            return f" (not certified: {certified['unsupported']})"
        return f" (proven; the attacked figure is {certified['attacked_accuracy']:.4f})"
    threat = (evaluation.get("threats") or {}).get(name.removeprefix("threat_"))
    if name.startswith("threat_") and threat and threat.get("natural") is not None:
        return f" ({threat['budget_text']}: natural model {threat['natural']:.4f})"
    figure = {"clean_drop": "clean_accuracy", "robust_gain": "robust_accuracy"}.get(name)
    if figure is None:
        return ""
    natural, this = evaluation["natural"][figure], evaluation[figure]
    return f" ({figure}: natural model {natural:.4f}, this model {this:.4f})"


def _at_least(name: str, value: float, threshold: float) -> GateCheck:
    return GateCheck(name, value, threshold, value >= threshold, ">=")


def summary(check: dict) -> str:
    return f"{check['name']} {check['value']:.4f} {check['rule']} {check['threshold']:.4f}"
