"""The promotion gate: explicit thresholds on clean accuracy, its drop versus the natural
model, worst-case robust accuracy, and the trustworthiness of the evaluation itself.

Only a model whose verdict passed can become ``champion``. The verdict is written to
``metrics/gate.json`` whatever it says, so a failed run still leaves its reasons behind.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from iocane.config import GateConfig

log = logging.getLogger("iocane")


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: float
    threshold: float
    passed: bool
    rule: str


def check_gate(gate: GateConfig, evaluation: dict) -> dict:
    """Judge an evaluation (the ``metrics/evaluate.json`` document) against the thresholds."""
    clean = evaluation["clean_accuracy"]
    robust = evaluation["robust_accuracy"]
    drop = evaluation["natural"]["clean_accuracy"] - clean
    flags = evaluation.get("flags", [])
    checks = [
        GateCheck(
            "clean_accuracy", clean, gate.min_clean_accuracy, clean >= gate.min_clean_accuracy, ">="
        ),
        GateCheck("clean_drop", drop, gate.max_clean_drop, drop <= gate.max_clean_drop, "<="),
        GateCheck(
            "robust_accuracy",
            robust,
            gate.min_robust_accuracy,
            robust >= gate.min_robust_accuracy,
            ">=",
        ),
    ]
    if gate.require_trusted:
        checks.append(GateCheck("trust_flags", len(flags), 0, not flags, "<="))
    failed = [check for check in checks if not check.passed]
    reasons = [
        f"{check.name} = {check.value:.4f}, required {check.rule} {check.threshold:.4f}"
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


def summary(check: dict) -> str:
    return f"{check['name']} {check['value']:.4f} {check['rule']} {check['threshold']:.4f}"
