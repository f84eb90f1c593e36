"""The gate: each threshold can fail the verdict on its own, and flags fail it when required."""

from __future__ import annotations

import pytest

from iocane.config import GateConfig
from iocane.robustness.gate import check_gate

GATE = GateConfig(
    min_clean_accuracy=0.9, max_clean_drop=0.05, min_robust_accuracy=0.7, require_trusted=True
)


def evaluation(clean: float = 0.95, robust: float = 0.8, natural: float = 0.97, flags=()) -> dict:
    return {
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "natural": {"clean_accuracy": natural},
        "flags": list(flags),
    }


def test_passing_evaluation() -> None:
    verdict = check_gate(GATE, evaluation())
    assert verdict["passed"] and verdict["reasons"] == []
    assert verdict["clean_drop"] == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("document", "failing"),
    [
        (evaluation(clean=0.85, natural=0.88), "clean_accuracy"),
        (evaluation(clean=0.91, natural=0.99), "clean_drop"),
        (evaluation(robust=0.5), "robust_accuracy"),
        (evaluation(flags=["zero input gradients"]), "trust_flags"),
    ],
)
def test_each_threshold_fails_alone(document: dict, failing: str) -> None:
    verdict = check_gate(GATE, document)
    assert not verdict["passed"]
    assert [check["name"] for check in verdict["checks"] if not check["passed"]] == [failing]
    assert any(failing in reason or "trust flag" in reason for reason in verdict["reasons"])


def test_flags_tolerated_when_trust_not_required() -> None:
    lenient = GateConfig(
        min_clean_accuracy=0.9,
        max_clean_drop=0.05,
        min_robust_accuracy=0.7,
        require_trusted=False,
    )
    assert check_gate(lenient, evaluation(flags=["something"]))["passed"]
