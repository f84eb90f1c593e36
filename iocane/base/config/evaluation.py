"""The ``evaluate`` section (the attack suite) and the ``gate`` section (promotion thresholds)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator

from iocane.base.certify_names import BOUND_METHODS
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


_Positive = Annotated[float, Field(gt=0)]
BoundMethod = Literal[BOUND_METHODS]  # type: ignore[valid-type]


class SmoothingConfig(Section):
    """``evaluate.certify.smoothing``: randomized smoothing's CERTIFY (Cohen et al. 2019), an L2
    certificate for any model, at the cost of ``n0 + n`` noisy passes per point."""

    sigma: float = Field(gt=0, description="the Gaussian noise's standard deviation, pixel units")
    n0: int = Field(ge=1, description="noisy samples that select the predicted class")
    n: int = Field(ge=1, description="noisy samples that estimate its probability")
    alpha: float = Field(gt=0, lt=1, description="the certificate fails with at most this chance")
    radii: listed(_Positive) = Field(  # type: ignore[valid-type]
        description="L2 radii the certified accuracy is reported at"
    )

    @model_validator(mode="after")
    def _some_radius(self) -> Self:
        require(len(self.radii) > 0, "radii", "list at least one radius (e.g. [0.25, 0.5])")
        return self


class CertifyConfig(Section):
    """``evaluate.certify``: what is proven beside what is measured (iocane/certify): bound
    methods at the training threat (``train.norm``, ``train.eps``), and randomized smoothing."""

    bounds: listed(BoundMethod) = Field(  # type: ignore[valid-type]
        (), description="bound methods at train.norm, train.eps: ibp, crown; [] = none"
    )
    smoothing: SmoothingConfig | None = Field(
        None, description="randomized smoothing's L2 certificate; null = none"
    )

    @model_validator(mode="after")
    def _bounds_once(self) -> Self:
        twice = sorted({name for name in self.bounds if self.bounds.count(name) > 1})
        require(not twice, "bounds", f"{', '.join(twice)} listed more than once")
        return self

    def runs(self) -> bool:
        """Whether anything is certified at all."""
        return bool(self.bounds) or self.smoothing is not None


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
    # Optional: params files written before it certify nothing.
    certify: CertifyConfig | None = Field(
        None, description="certified accuracy beside the attacked one; null = none"
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
    # Optional: params files written before it do not check a certified figure.
    min_certified_accuracy: float | None = Field(
        None,
        ge=0,
        le=1,
        description="the least certified accuracy of the hardened model, by the best bound of "
        "evaluate.certify.bounds; null = not checked",
    )

    @model_validator(mode="after")
    def _robustness_required(self) -> Self:
        require(
            self.min_robust_accuracy is not None or self.min_robust_gain is not None,
            "min_robust_accuracy",
            "null needs gate.min_robust_gain: a gate must require some robustness",
        )
        return self
