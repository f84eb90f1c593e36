"""The typed configuration tree, loaded from params.yaml.

params.yaml is the only place defaults live: every key must be present, unknown keys are
rejected, and every value is checked for type and range before any work starts. Errors name
the offending key (``train.eps``) so a user can fix the file without reading code.

The tree is pydantic v2 models: strict types (a string is not a number, ``yes`` is not a bool),
``extra="forbid"``, frozen, ranges as ``Field`` bounds, one model validator per rule between
keys. ``iocane.base.config_errors`` turns pydantic's errors into the one-line messages that name
the key; ``iocane.base.overlays`` reads params files (``extends``, ``--set`` overrides). This
package must not import torch: bad params exit before it loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self, TypeVar

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from iocane.base.config.data import DataConfig
from iocane.base.config.evaluation import EvaluateConfig, GateConfig
from iocane.base.config.fields import DATASETS, MODELS, NORMS, Method, Section, Text, require
from iocane.base.config.model import ModelConfig, ModelName
from iocane.base.config.registry import RegistryConfig, fill_registered_name, registered_name
from iocane.base.config.runs import ReportConfig, SweepConfig
from iocane.base.config.training import OptimConfig, RuntimeConfig, TrainConfig, WarmupConfig
from iocane.base.config_errors import ConfigError, explain
from iocane.base.overlays import apply_override, origin, read_params
from iocane.base.start_defaults import fill_by_start

__all__ = [
    "DATASETS",
    "MODELS",
    "NORMS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvaluateConfig",
    "GateConfig",
    "Method",
    "ModelConfig",
    "ModelName",
    "OptimConfig",
    "RegistryConfig",
    "ReportConfig",
    "RuntimeConfig",
    "Section",
    "SweepConfig",
    "Text",
    "TrainConfig",
    "WarmupConfig",
    "apply_override",
    "config_from_dict",
    "load_config",
    "registered_name",
    "replace",
]


class Config(Section):
    seed: int = Field(ge=0)
    data: DataConfig
    model: ModelConfig
    warmup: WarmupConfig
    train: TrainConfig
    runtime: RuntimeConfig
    evaluate: EvaluateConfig
    gate: GateConfig
    registry: RegistryConfig
    sweep: SweepConfig = SweepConfig()  # optional section
    report: ReportConfig = ReportConfig()  # optional section
    _start_defaults: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _defaults_by_start(cls, document: Any, handler: ValidatorFunctionWrapHandler) -> Config:
        """A null train.lr takes the default for where training starts; a number given anywhere
        wins (iocane/base/start_defaults.py)."""
        document, notes = fill_by_start(fill_registered_name(document))
        config = handler(document)
        config._start_defaults = notes
        return config

    @property
    def start_defaults(self) -> tuple[str, ...]:
        """Log lines: the keys a start from model.weights filled (the train stage logs them)."""
        return self._start_defaults

    @model_validator(mode="after")
    def _warmup_trains_unless_given_weights(self) -> Self:
        require(
            self.warmup.epochs >= 1 or self.model.weights is not None,
            "warmup.epochs",
            "0 needs model.weights (a natural baseline trained from scratch needs an epoch)",
        )
        return self

    @model_validator(mode="after")
    def _gate_thresholds_name_profiled_threats(self) -> Self:
        threats = self.evaluate.threats.profile()
        profiled = ", ".join(threats) or "none"
        for name in self.gate.min_threat_accuracy.thresholds():
            require(
                name in threats,
                f"gate.min_threat_accuracy.{name}",
                f"{name} is not a threat of evaluate.threats (there: {profiled})",
            )
        return self

    @model_validator(mode="after")
    def _certified_gate_needs_bounds(self) -> Self:
        certify = self.evaluate.certify
        require(
            self.gate.min_certified_accuracy is None or (certify is not None and certify.bounds),
            "gate.min_certified_accuracy",
            "needs evaluate.certify.bounds (e.g. [ibp, crown]): no bound, no certified figure",
        )
        return self

    @model_validator(mode="after")
    def _sweep_eps_within_the_image(self) -> Self:
        if self.train.norm == "Linf":
            for eps in self.sweep.eps:
                require(eps <= 1, "sweep.eps", f"{eps}: a Linf eps above 1 covers the whole image")
        return self


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a params file (and the files it ``extends``), apply ``SECTION.KEY=VALUE``
    overrides, and validate everything. An error in an overlay names its file and key."""
    document, files = read_params(Path(path))
    for override in overrides:
        apply_override(document, override)
    try:
        return config_from_dict(document)
    except ConfigError as error:
        overridden = {override.partition("=")[0] for override in overrides}
        if len(files) == 1 or error.key in overridden:
            raise
        raise ConfigError(f"{origin(error.key, files)}: {error}", key=error.key) from None


def config_from_dict(document: Any) -> Config:
    """Validate a whole params document; a ConfigError names the first bad key."""
    try:
        return Config.model_validate(document)
    except ValidationError as error:
        raise explain(error, Config) from None


S = TypeVar("S", bound=Section)


def replace(section: S, **changes: Any) -> S:
    """``dataclasses.replace`` for the tree: a copy with ``changes``, validated again (pydantic's
    ``model_copy(update=...)`` would skip the checks)."""
    try:
        return type(section).model_validate({**dict(section), **changes})
    except ValidationError as error:
        raise explain(error, type(section)) from None
