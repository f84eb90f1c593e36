"""The ``evaluate`` section (the attack suite) and the ``gate`` section (promotion thresholds)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from iocane.base.config.fields import Section, Text, listed, require


class EvaluateConfig(Section):
    """The validation suite; its threat model is the one the model was trained for."""

    n_samples: int = Field(ge=0, description="test images attacked; 0 = all")
    batch_size: int = Field(ge=1)
    preset: Literal["quick", "standard", "thorough"] = Field(description="see attacks/suites.py")
    # Optional: params files written before it run the preset alone.
    extra_attacks: listed(Text) = Field(  # type: ignore[valid-type]
        (), description="added to the preset: eot_pgd, bpda_pgd, or a user's module:factory"
    )


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

    @model_validator(mode="after")
    def _robustness_required(self) -> Self:
        require(
            self.min_robust_accuracy is not None or self.min_robust_gain is not None,
            "min_robust_accuracy",
            "null needs gate.min_robust_gain: a gate must require some robustness",
        )
        return self
