"""The ``evaluate`` section (the attack suite) and the ``gate`` section (promotion thresholds)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from iocane.base.config.fields import Section, Text, listed, require
from iocane.base.config_errors import Rule
from iocane.base.threat_budgets import THREAT_NAMES, BudgetError, check_threats


class SpatialBudget(Section):
    """The spatial threat's grid: rotations in [-rotate, rotate] degrees, translations in
    [-translate, translate] pixels per axis; without a count, the preset's grid."""

    rotate: float = Field(description="degrees, 0 to 180")
    translate: float = Field(description="pixels per axis")
    rotations: int | None = Field(None, description="angles in the grid; null = the preset's")
    translations: int | None = Field(
        None, description="shifts per axis in the grid; null = the preset's"
    )


class ThreatsConfig(Section):
    """``evaluate.threats``: the threats of the profile and their budgets (attacks/threats.py);
    a threat left out (null) is not run. Its fields are the threat table's names, in its order
    (a test holds them to it); the table checks each budget and names the bad part."""

    linf: float | None = Field(None, description="eps, pixels in [0, 1]")
    l2: float | None = Field(None, description="eps, pixels in [0, 1]")
    l0: int | None = Field(None, description="pixels changed (all channels of a pixel count once)")
    patch: int | None = Field(None, description="side of the square patch, in pixels")
    corruptions: listed(int) | None = Field(  # type: ignore[valid-type]
        None, description="severities, 1 to 5 (Hendrycks & Dietterich 2019)"
    )
    spatial: SpatialBudget | None = Field(None, description="the grid of rotations and shifts")

    @model_validator(mode="after")
    def _budgets_run(self) -> Self:
        try:
            check_threats(self.profile())
        except BudgetError as error:
            raise Rule(error.key, error.message) from None
        return self

    def profile(self) -> dict[str, Any]:
        """The threats to run, in the table's order, each with its budget as plain values (a
        list of severities, a mapping for spatial without its null counts)."""
        budgets = {}
        for name in THREAT_NAMES:
            value = getattr(self, name)
            if isinstance(value, Section):
                value = {key: item for key, item in value.to_dict().items() if item is not None}
            elif isinstance(value, tuple):
                value = list(value)
            if value is not None:
                budgets[name] = value
        return budgets


class EvaluateConfig(Section):
    """The validation suite; its threat model is the one the model was trained for."""

    n_samples: int = Field(ge=0, description="test images attacked; 0 = all")
    batch_size: int = Field(ge=1)
    preset: Literal["quick", "standard", "thorough"] = Field(description="see attacks/suites.py")
    # Optional: params files written before it run the preset alone.
    extra_attacks: listed(Text) = Field(  # type: ignore[valid-type]
        (), description="added to the preset: eot_pgd, bpda_pgd, or a user's module:factory"
    )
    # Optional: params files written before it run no threat profile.
    threats: ThreatsConfig = Field(
        ThreatsConfig(), description="the threat profile beside the training threat; {} = none"
    )


_Share = Annotated[float, Field(ge=0, le=1)]


class ThreatThresholds(Section):
    """``gate.min_threat_accuracy``: per threat of ``evaluate.threats``, the least accuracy the
    hardened model must keep under it; null = not checked. Fields as ``ThreatsConfig``'s."""

    linf: _Share | None = None
    l2: _Share | None = None
    l0: _Share | None = None
    patch: _Share | None = None
    corruptions: _Share | None = None
    spatial: _Share | None = None

    def thresholds(self) -> dict[str, float]:
        """The thresholds set, in the table's order."""
        return {
            name: getattr(self, name) for name in THREAT_NAMES if getattr(self, name) is not None
        }


class GateConfig(Section):
    """The promotion gate (iocane/robustness/gate.py). Absolute floors suit a known dataset; on
    the user's own data the natural model sets the scale, so the floors can be null and the
    thresholds relative to it (max_clean_drop, min_robust_gain: configs/own_model.yaml)."""

    min_clean_accuracy: float | None = Field(
        ge=0, le=1, description="null = no absolute floor: max_clean_drop versus the natural model"
    )
    max_clean_drop: float = Field(
        ge=0, le=1, description="versus the natural warmup model, in accuracy points (0.05 = 5%)"
    )
    min_robust_accuracy: float | None = Field(
        ge=0, le=1, description="worst-case robust accuracy; null = no absolute floor"
    )
    # Optional: params files written before it have no relative robust threshold.
    min_robust_gain: float | None = Field(
        None,
        ge=0,
        le=1,
        description="worst-case robust accuracy above the natural model's, at least this; "
        "null = not checked",
    )
    require_trusted: bool = Field(
        description="an evaluation that raised trust flags fails the gate"
    )
    # Optional: params files written before it have no threshold per threat.
    min_threat_accuracy: ThreatThresholds = Field(
        ThreatThresholds(),
        description="threat of evaluate.threats -> minimum accuracy of the hardened model under "
        "it; {} = none",
    )

    @model_validator(mode="after")
    def _robustness_required(self) -> Self:
        require(
            self.min_robust_accuracy is not None or self.min_robust_gain is not None,
            "min_robust_accuracy",
            "null needs gate.min_robust_gain: a gate must require some robustness",
        )
        return self
