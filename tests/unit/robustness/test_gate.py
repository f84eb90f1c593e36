"""The gate: each threshold can fail the verdict on its own, and flags fail it when required."""

from __future__ import annotations

import pytest

from iocane.base.config import ConfigError, GateConfig
from iocane.base.config.evaluation import ThreatThresholds
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


# The user's own data (configs/own_model.yaml): no absolute floors, thresholds relative to the
# natural model (the user's model.weights).
RELATIVE = GateConfig(
    min_clean_accuracy=None,
    max_clean_drop=0.1,
    min_robust_accuracy=None,
    min_robust_gain=0.1,
    require_trusted=True,
)


def relative(clean: float, robust: float, natural_clean: float, natural_robust: float) -> dict:
    document = evaluation(clean=clean, robust=robust, natural=natural_clean)
    document["natural"]["robust_accuracy"] = natural_robust
    return document


def test_relative_gate_passes_a_faithful_hardening_at_any_scale() -> None:
    # The README's measured ResNet-18 (0.833 / 0.074 -> 0.766 / 0.350), and a much weaker
    # user's model hardened as faithfully: neither absolute floor of the digits gate applies.
    for figures in ((0.766, 0.350, 0.833, 0.074), (0.41, 0.22, 0.45, 0.03)):
        verdict = check_gate(RELATIVE, relative(*figures))
        assert verdict["passed"], verdict["reasons"]
        assert [c["name"] for c in verdict["checks"]] == [
            "clean_drop",
            "robust_gain",
            "trust_flags",
        ]
    assert not check_gate(GATE, relative(0.766, 0.350, 0.833, 0.074))["passed"]


@pytest.mark.parametrize(
    ("figures", "failing", "reason"),
    [
        # Wrecked: robust, but most of the clean accuracy gone.
        ((0.30, 0.28, 0.833, 0.074), "clean_drop", "natural model 0.8330, this model 0.3000"),
        # Not hardened: clean kept, robustness barely moved.
        ((0.83, 0.10, 0.833, 0.074), "robust_gain", "natural model 0.0740, this model 0.1000"),
    ],
)
def test_relative_gate_fails_a_wrecked_or_unhardened_model(
    figures: tuple, failing: str, reason: str
) -> None:
    verdict = check_gate(RELATIVE, relative(*figures))
    assert not verdict["passed"]
    assert [c["name"] for c in verdict["checks"] if not c["passed"]] == [failing]
    (written,) = verdict["reasons"]
    assert written.startswith(f"{failing} = ") and reason in written


def test_a_gate_must_require_some_robustness() -> None:
    with pytest.raises(ValueError, match="min_robust_gain"):
        GateConfig(
            min_clean_accuracy=None,
            max_clean_drop=0.1,
            min_robust_accuracy=None,
            require_trusted=True,
        )


def _profiled(l0: float, spatial: float) -> dict:
    document = evaluation()
    document["threats"] = {
        "l0": {"hardened": l0, "natural": 0.05, "budget_text": "2 pixels"},
        "spatial": {"hardened": spatial, "natural": None, "budget_text": "rotations up to 15 deg"},
    }
    return document


THREAT_GATE = GATE.model_copy(update={"min_threat_accuracy": ThreatThresholds(l0=0.3, spatial=0.6)})


def test_a_threshold_per_threat_is_a_check_of_its_own() -> None:
    verdict = check_gate(THREAT_GATE, _profiled(l0=0.31, spatial=0.6))
    assert verdict["passed"], verdict["reasons"]
    names = [check["name"] for check in verdict["checks"]]
    assert names[-3:] == ["threat_l0", "threat_spatial", "trust_flags"]
    assert "threat_l0" not in [
        check["name"] for check in check_gate(GATE, _profiled(0, 0))["checks"]
    ]


@pytest.mark.parametrize(
    ("l0", "spatial", "failing", "reason"),
    [
        (
            0.29,
            0.9,
            "threat_l0",
            "threat_l0 = 0.2900, required >= 0.3000 (2 pixels: natural model 0.0500)",
        ),
        (0.9, 0.5, "threat_spatial", "threat_spatial = 0.5000, required >= 0.6000"),
    ],
)
def test_a_threat_below_its_threshold_fails_the_gate(
    l0: float, spatial: float, failing: str, reason: str
) -> None:
    verdict = check_gate(THREAT_GATE, _profiled(l0, spatial))
    assert not verdict["passed"]
    assert [c["name"] for c in verdict["checks"] if not c["passed"]] == [failing]
    assert verdict["reasons"] == [reason]


def test_a_threshold_for_a_threat_the_evaluation_lacks_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"gate\.min_threat_accuracy\.l0: the evaluation has no"):
        check_gate(THREAT_GATE, evaluation())


def _certified(proven: float | None, unsupported: str | None = None) -> dict:
    document = evaluation()
    document["certified"] = {
        "bounds": {"ibp": {"hardened": proven, "natural": None, "seconds": 0.1}},
        "certified_accuracy": proven,
        "attacked_accuracy": 0.8,
        "unsupported": unsupported,
    }
    return document


CERTIFIED_GATE = GATE.model_copy(update={"min_certified_accuracy": 0.5})


def test_the_certified_figure_is_a_check_of_its_own() -> None:
    verdict = check_gate(CERTIFIED_GATE, _certified(0.5))
    assert verdict["passed"], verdict["reasons"]
    assert [check["name"] for check in verdict["checks"]][-2:] == ["certified", "trust_flags"]
    assert "certified" not in [c["name"] for c in check_gate(GATE, _certified(0.0))["checks"]]


@pytest.mark.parametrize(
    ("proven", "unsupported", "reason"),
    [
        (
            0.49,
            None,
            "certified = 0.4900, required >= 0.5000 (proven; the attacked figure is 0.8000)",
        ),
        (
            None,
            "cannot bound layer 'head.1' (GELU)",
            "certified = 0.0000, required >= 0.5000 (not certified: cannot bound layer 'head.1' "
            "(GELU))",
        ),
    ],
)
def test_a_certified_figure_below_the_threshold_fails_the_gate(
    proven: float | None, unsupported: str | None, reason: str
) -> None:
    verdict = check_gate(CERTIFIED_GATE, _certified(proven, unsupported))
    assert not verdict["passed"]
    assert [c["name"] for c in verdict["checks"] if not c["passed"]] == ["certified"]
    assert verdict["reasons"] == [reason]


def test_a_certified_threshold_without_a_certification_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"gate\.min_certified_accuracy: the evaluation has no"):
        check_gate(CERTIFIED_GATE, evaluation())
