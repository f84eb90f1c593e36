"""The typed configuration tree, loaded from params.yaml.

params.yaml is the only place defaults live: every key must be present, unknown keys are
rejected, and every value is checked for type and range before any work starts. Errors name
the offending key (``train.eps``) so a user can fix the file without reading code.

The tree is pydantic v2 models: strict types (a string is not a number, ``yes`` is not a bool),
``extra="forbid"``, frozen, ranges as ``Field`` bounds, one model validator per rule between
keys. ``iocane.base.config_errors`` turns pydantic's errors into the one-line messages that name
the key; ``iocane.base.overlays`` reads params files (``extends``, ``--set`` overrides). This
module must not import torch: bad params exit before it loads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    model_validator,
)

from iocane.base.config_errors import ConfigError, Rule, describe, explain
from iocane.base.overlays import apply_override, origin, read_params
from iocane.base.start_defaults import by_start_description, fill_by_start, nullable_number

__all__ = [
    "Config",
    "ConfigError",
    "apply_override",
    "config_from_dict",
    "load_config",
    "replace",
]

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "svhn", "folder")
MODELS = ("small_cnn", "madry_cnn", "compact_cnn", "preact_resnet18", "wide_resnet")
NORMS = ("Linf", "L2")

Method = Literal["pgd", "trades", "fgsm", "fgsm_rs", "nfgsm", "free", "alp", "multi"]
Text = Annotated[str, Field(min_length=1)]  # an empty string is never a useful value


def _as_tuple(value: Any) -> tuple[Any, ...]:
    """A YAML list becomes a tuple (frozen, hashable); anything else is refused by name."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise Rule("", f"expected a list, got {describe(value)}")


def _listed(item: Any) -> Any:
    return Annotated[tuple[item, ...], BeforeValidator(_as_tuple)]


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise Rule(key, message)


class Section(BaseModel):
    """What every part of the tree shares: strict, closed, immutable, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class DataConfig(Section):
    dataset: Literal["digits", "mnist", "fashion_mnist", "cifar10", "svhn", "folder"]
    root: Text | None = Field(
        description="directory holding the torchvision files, or the image folder (folder); "
        "unused for digits"
    )
    download: bool = Field(description="let torchvision download into root (needs network)")
    val_fraction: float = Field(
        gt=0, lt=0.5, description="of the training split, for per-epoch validation"
    )
    test_fraction: float = Field(
        gt=0, lt=0.5, description="held-out test share when the dataset has no official split"
    )
    limit_train: int = Field(
        ge=0, description="0 = all training images; N = a stratified subsample"
    )
    limit_test: int = Field(ge=0, description="0 = all test images")
    image_size: int = Field(
        ge=0,
        le=4096,
        description="folder: side after resizing the shorter side and centre-cropping; "
        "0 = keep (all images must share one square size)",
    )
    channels: Literal[0, 1, 3] = Field(
        description="folder: 1 (grayscale), 3 (RGB), 0 = infer (1 when every image is grayscale)"
    )
    on_bad_image: Literal["fail", "skip"] = Field(
        description="folder: an unreadable or truncated image fails prepare, or is skipped"
    )
    # Optional: params files written before it resize, as torchvision's Resize does.
    on_small_image: Literal["resize", "fail"] = Field(
        "resize",
        description="folder: an image smaller than image_size is scaled up (counted and "
        "logged, as torchvision's Resize does) or fails prepare",
    )

    @model_validator(mode="after")
    def _files_to_read(self) -> Self:
        if self.dataset == "folder":
            _check(self.root is not None, "root", "dataset folder needs data.root: the folder")
            _check(not self.download, "download", "dataset folder has nothing to download")
            return self
        _check(
            self.dataset == "digits" or self.root is not None or self.download,
            "root",
            f"dataset {self.dataset} needs a root directory (or data.download: true)",
        )
        for key, value, default in (
            ("image_size", self.image_size, 0),
            ("channels", self.channels, 0),
            ("on_bad_image", self.on_bad_image, "fail"),
            ("on_small_image", self.on_small_image, "resize"),
        ):
            _check(value == default, key, f"applies to dataset folder only (keep {default})")
        return self


def _model_name(value: Any) -> Any:
    """One of iocane's architectures, or ``torchvision:<builder>``, ``timm:<name>``,
    ``<module>:<factory>`` (built by models/sources.py when the stage runs)."""
    if not isinstance(value, str):
        raise Rule("", f"expected a string, got {describe(value)}")
    if ":" not in value:
        if value not in MODELS:
            raise Rule("", f"{value!r} is not one of {', '.join(MODELS)} or source:builder")
        return value
    source, _, builder = value.partition(":")
    dotted = all(part.isidentifier() for part in source.split("."))
    if not (dotted and builder.isidentifier()):
        raise Rule(
            "",
            f"{value!r}: expected torchvision:<builder>, timm:<name> or <module>:<factory>",
        )
    return value


ModelName = Annotated[str, BeforeValidator(_model_name)]
# Not a plain float: strict mode would refuse a YAML integer such as 1 for a std of 1.0.
Stat = Annotated[float, BeforeValidator(lambda v: float(v) if isinstance(v, int) else v)]


class ModelConfig(Section):
    name: ModelName = Field(
        description="small_cnn | madry_cnn | compact_cnn | preact_resnet18 | wide_resnet | "
        "torchvision:<builder> | timm:<name> | <module>:<factory>"
    )
    width: int = Field(ge=0, description="0 = the architecture's default width")
    depth: int = Field(ge=0, description="wide_resnet only; 0 = default (28)")
    mean: _listed(Stat) | None = Field(  # type: ignore[valid-type]
        default=None, description="input normalisation per channel; null = the data's mean"
    )
    std: _listed(Stat) | None = Field(  # type: ignore[valid-type]
        default=None, description="input normalisation per channel; null = the data's std"
    )
    weights: Text | None = Field(
        default=None,
        description=(
            "a state_dict file (.pt, .pth, .safetensors) or an MLflow model URI "
            "(models:/NAME@ALIAS, models:/NAME/N, runs:/RUN_ID/PATH) to start from; null = scratch"
        ),
    )
    reset_head: bool = Field(
        default=False,
        description="replace the last linear layer when the weights' class count differs",
    )

    @model_validator(mode="after")
    def _wide_resnet_depth(self) -> Self:
        if self.name == "wide_resnet" and self.depth:
            _check((self.depth - 4) % 6 == 0, "depth", "wide_resnet needs depth 6n+4")
        if ":" in self.name:
            _check(not self.width, "width", f"applies to iocane's own models, not {self.name}")
            _check(not self.depth, "depth", f"applies to iocane's own models, not {self.name}")
        if self.std is not None:
            _check(all(s > 0 for s in self.std), "std", "every std must be positive")
        return self


class OptimConfig(Section):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    # Optional: params files written before it train with SGD, as they always did.
    optimizer: Literal["sgd", "adam", "adamw"] = Field(
        default="sgd",
        description="sgd (with momentum) | adam | adamw (Adam's beta1 is the momentum key)",
    )
    lr: float = Field(gt=0)
    momentum: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    lr_schedule: Literal["cosine", "step", "constant", "onecycle"] = Field(
        description="onecycle: linear 0 -> lr at 2/5 of training -> 0, stepped every batch"
    )
    # Which epoch checkpoints stay on disk (iocane/training/checkpoints.py). Optional: params
    # files written before it keep the newest and the best. Not part of the run key: changing
    # it never discards a run's checkpoints.
    keep_checkpoints: Literal["newest_and_best", "all"] = Field(
        default="newest_and_best",
        description="newest_and_best: the newest (to resume) and the best; all: every epoch",
    )


class WarmupConfig(OptimConfig):
    """Natural (clean) training: the curriculum start and the natural baseline."""

    epochs: int = Field(
        ge=0, description="0 only with model.weights: the user's model is the natural baseline"
    )


class TrainConfig(OptimConfig):
    """Adversarial training, continuing from the warmup weights (iocane/training/recipes.py)."""

    method: Method
    # null in params.yaml: filled by where training starts (iocane/base/start_defaults.py)
    lr: nullable_number(float) = Field(gt=0, description=by_start_description("lr"))  # type: ignore[valid-type]
    norm: Literal["Linf", "L2"]
    eps: float = Field(gt=0, description="perturbation budget in [0,1] pixel units")
    step_size: float = Field(gt=0, description="PGD step (about 2.5 * eps / steps)")
    steps: int = Field(ge=1)
    random_start: bool
    adv_weight: float = Field(ge=0, le=1, description="1.0 = pure Madry; 0.5 = the 50/50 mix")
    eps_ramp_epochs: int = Field(
        ge=0, description="eps grows from 0 over these epochs; 0 = no ramp"
    )
    trades_beta: float = Field(gt=0, description="trades: weight of the KL term")
    alp_weight: float = Field(ge=0, description="alp: weight of the logit-pairing term")
    free_replays: int = Field(ge=1, description="free: replays m of each minibatch")
    multi_other_eps: float = Field(gt=0, description="multi: eps of the other norm")
    select: Literal["best", "last"] = Field(
        description="which epoch's weights become the model (robust overfitting)"
    )
    # Data-parallel processes (PyTorch DDP through torchrun; iocane/training/launcher.py).
    # Optional: params files written before it train in one process.
    nproc: int = Field(1, ge=1, description="1 = one process, no DDP")
    # Training to a time budget (iocane/training/budget.py). Optional: params files written
    # before it train for train.epochs.
    budget_minutes: float = Field(
        0, ge=0, description="0 = train.epochs; else the epochs that fill this many minutes"
    )

    @model_validator(mode="after")
    def _linf_eps_within_the_image(self) -> Self:
        if self.norm == "Linf":
            _check(self.eps <= 1, "eps", "a Linf eps above 1 covers the whole [0,1] image")
        return self

    @model_validator(mode="after")
    def _two_images_per_process(self) -> Self:
        _check(
            self.batch_size >= 2 * self.nproc,
            "batch_size",
            f"must be at least 2 per process ({2 * self.nproc} for train.nproc={self.nproc}): "
            "the global batch is split between the processes",
        )
        return self

    @model_validator(mode="after")
    def _other_norm_within_the_image(self) -> Self:
        if self.norm == "L2":
            _check(
                self.multi_other_eps <= 1,
                "multi_other_eps",
                "the other norm is Linf: an eps above 1 covers the whole [0,1] image",
            )
        return self

    @model_validator(mode="after")
    def _adversarial_methods_need_adversarial_loss(self) -> Self:
        if self.method in ("pgd", "fgsm", "fgsm_rs", "nfgsm", "multi", "alp"):
            _check(
                self.adv_weight > 0,
                "adv_weight",
                f"must be > 0 for train.method={self.method} (0 would be natural training)",
            )
        return self

    @model_validator(mode="after")
    def _ramp_within_training(self) -> Self:
        _check(
            self.eps_ramp_epochs <= self.epochs,
            "eps_ramp_epochs",
            f"must be in [0, train.epochs={self.epochs}]",
        )
        return self


class RuntimeConfig(Section):
    """How training uses the hardware (iocane/training/hardware.py); evaluation runs in float32."""

    precision: Literal["auto", "fp32", "bf16"] = Field(
        description="auto: bf16 autocast on CUDA, float32 elsewhere"
    )
    compile: bool = Field(description="torch.compile the training passes")


class EvaluateConfig(Section):
    """The validation suite; its threat model is the one the model was trained for."""

    n_samples: int = Field(ge=0, description="test images attacked; 0 = all")
    batch_size: int = Field(ge=1)
    preset: Literal["quick", "standard", "thorough"] = Field(description="see attacks/suites.py")
    # Optional: params files written before it run the preset alone.
    extra_attacks: _listed(Text) = Field(  # type: ignore[valid-type]
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
        _check(
            self.min_robust_accuracy is not None or self.min_robust_gain is not None,
            "min_robust_accuracy",
            "null needs gate.min_robust_gain: a gate must require some robustness",
        )
        return self


# A registered name MLflow takes: letters, digits, '.', '_' and '-' (what else a folder's name
# holds becomes '-').
_UNNAMEABLE = re.compile(r"[^a-z0-9._-]+")


def registered_name(data: Any) -> str:
    """The name ``registry.model_name: null`` stands for: ``iocane-<dataset>`` for a built-in
    dataset (``iocane-digits``, ``iocane-fashion-mnist``), ``iocane-<folder name>`` for the
    user's folder (``data.root: data/images`` -> ``iocane-images``), never another data's."""
    dataset = str(data.get("dataset", "")) if isinstance(data, dict) else ""
    if dataset != "folder":
        return f"iocane-{dataset.replace('_', '-')}"
    root = Path(str(data.get("root") or "."))
    folder = root.name if root.name not in ("", ".", "..") else root.resolve().name
    return f"iocane-{_UNNAMEABLE.sub('-', folder.lower()).strip('-.') or 'folder'}"


def _fill_registered_name(document: Any) -> Any:
    """``document`` with a null ``registry.model_name`` replaced by :func:`registered_name`, so
    that every reader of the loaded tree sees a name; malformed input is left to validation."""
    registry = document.get("registry") if isinstance(document, dict) else None
    if not isinstance(registry, dict) or registry.get("model_name", "") is not None:
        return document
    name = registered_name(document.get("data"))
    return {**document, "registry": {**registry, "model_name": name}}


class RegistryConfig(Section):
    # Null in params.yaml, filled by Config from the data before validation (the schema says so).
    model_name: Annotated[
        Text,
        WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1}, {"type": "null"}]}),
    ] = Field(
        description="the registered model (and MLflow experiment); null = iocane-<dataset>, "
        "or iocane-<folder name> for data.dataset folder"
    )
    max_clean_regression: float = Field(
        ge=0, le=1, description="how much clean accuracy a new champion may give up"
    )


class SweepConfig(Section):
    """A grid of hardening runs (``iocane sweep``, flows/sweep.py). An empty list keeps the
    params' own value, so the default grid is the one point ``iocane run`` would train."""

    eps: _listed(Annotated[float, Field(gt=0)]) = Field((), description="train.eps values")  # type: ignore[valid-type]
    method: _listed(Method) = Field((), description="train.method values")  # type: ignore[valid-type]
    width: _listed(Annotated[int, Field(ge=0)]) = Field((), description="model.width values")  # type: ignore[valid-type]
    model: _listed(ModelName) = Field((), description="model.name values (crossed with width)")  # type: ignore[valid-type]
    steps: _listed(Annotated[int, Field(ge=1)]) = Field(  # type: ignore[valid-type]
        (), description="train.steps values; each sets train.step_size to 2.5 * eps / steps"
    )
    lr: _listed(Annotated[float, Field(gt=0)]) = Field((), description="train.lr values")  # type: ignore[valid-type]
    budget_minutes: _listed(Annotated[float, Field(ge=0)]) = Field(  # type: ignore[valid-type]
        (), description="train.budget_minutes values (0 = train.epochs)"
    )
    seed: _listed(Annotated[int, Field(ge=0)]) = Field((), description="seed values")  # type: ignore[valid-type]
    min_clean_accuracy: float | None = Field(
        None, ge=0, le=1, description="the ranking's clean floor; null = gate.min_clean_accuracy"
    )
    runner: Literal["local", "dask", "ray"] = Field("local", description="where the points run")
    address: Text | None = Field(None, description="the Dask or Ray cluster; null = a local one")
    workers: int = Field(2, ge=1, description="local Dask cluster: worker processes")


class ReportConfig(Section):
    """What the run reports beyond robustness (iocane/reports/costs.py)."""

    price_per_hour: float | None = Field(
        None, ge=0, description="the machine's price: the run's cost is estimated; null = none"
    )


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
        document, notes = fill_by_start(_fill_registered_name(document))
        config = handler(document)
        config._start_defaults = notes
        return config

    @property
    def start_defaults(self) -> tuple[str, ...]:
        """Log lines: the keys a start from model.weights filled (the train stage logs them)."""
        return self._start_defaults

    @model_validator(mode="after")
    def _warmup_trains_unless_given_weights(self) -> Self:
        _check(
            self.warmup.epochs >= 1 or self.model.weights is not None,
            "warmup.epochs",
            "0 needs model.weights (a natural baseline trained from scratch needs an epoch)",
        )
        return self

    @model_validator(mode="after")
    def _sweep_eps_within_the_image(self) -> Self:
        if self.train.norm == "Linf":
            for eps in self.sweep.eps:
                _check(eps <= 1, "sweep.eps", f"{eps}: a Linf eps above 1 covers the whole image")
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
