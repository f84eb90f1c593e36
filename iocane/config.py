"""The typed configuration tree, loaded from params.yaml.

params.yaml is the only place defaults live: every key must be present, unknown keys are
rejected, and every value is checked for type and range before any work starts. Errors name
the offending key (``train.eps``) so a user can fix the file without reading code.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "svhn")
MODELS = ("small_cnn", "madry_cnn", "preact_resnet18", "wide_resnet")
NORMS = ("Linf", "L2")


class ConfigError(ValueError):
    """A params document that cannot be run; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["digits", "mnist", "fashion_mnist", "cifar10", "svhn"]
    root: str | None  # where torchvision datasets live; unused for digits
    download: bool  # let torchvision download when root lacks the files
    val_fraction: float  # share of the training split held out for per-epoch validation
    test_fraction: float  # share held out as test set when the dataset has no official split
    limit_train: int  # 0 = every training image; otherwise a stratified subsample
    limit_test: int  # 0 = every test image


@dataclass(frozen=True)
class ModelConfig:
    name: Literal["small_cnn", "madry_cnn", "preact_resnet18", "wide_resnet"]
    width: int  # 0 = the architecture's default (see models/)
    depth: int  # 0 = default; wide_resnet only


@dataclass(frozen=True)
class OptimConfig:
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    lr_schedule: Literal["cosine", "step", "constant"]


@dataclass(frozen=True)
class WarmupConfig(OptimConfig):
    """Natural (clean) training: the curriculum start and the natural baseline."""


@dataclass(frozen=True)
class TrainConfig(OptimConfig):
    """Adversarial training, continuing from the warmup weights (iocane/training/recipes.py)."""

    method: Literal["pgd", "trades", "fgsm", "fgsm_rs", "free", "alp", "multi"]
    norm: Literal["Linf", "L2"]
    eps: float
    step_size: float
    steps: int
    random_start: bool
    adv_weight: float  # weight of the adversarial loss; 1.0 is pure Madry, 0.5 the 50/50 mix
    eps_ramp_epochs: int  # eps grows linearly from 0 over this many epochs; 0 = no ramp
    trades_beta: float  # trades: weight of the KL term
    alp_weight: float  # alp: weight of the logit-pairing term
    free_replays: int  # free: replays m of each minibatch
    multi_other_eps: float  # multi: eps of the other norm, alternated with train.norm
    select: Literal["best", "last"]  # which epoch's weights become the model (robust overfitting)
    # Data-parallel processes (PyTorch DDP through torchrun; iocane/training/distributed.py).
    # Optional: params files written before it train in one process.
    nproc: int = 1


@dataclass(frozen=True)
class RuntimeConfig:
    """How training uses the hardware (iocane/training/hardware.py); evaluation runs in float32."""

    precision: Literal["auto", "fp32", "bf16"]  # auto: bf16 autocast on CUDA, float32 elsewhere
    compile: bool  # torch.compile the training passes


@dataclass(frozen=True)
class EvaluateConfig:
    """The validation suite; its threat model is the one the model was trained for."""

    n_samples: int  # 0 = the whole test split
    batch_size: int
    preset: Literal["quick", "standard", "thorough"]  # see attacks/suites.py
    # More attacks by name: eot_pgd, bpda_pgd (attacks/adaptive.py) or a user's module:factory.
    # Optional: params files written before it run the preset alone.
    extra_attacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateConfig:
    min_clean_accuracy: float
    max_clean_drop: float  # versus the natural warmup model, in accuracy points (0.05 = 5%)
    min_robust_accuracy: float
    require_trusted: bool  # an evaluation that raised trust flags fails the gate


@dataclass(frozen=True)
class RegistryConfig:
    model_name: str
    # How much clean accuracy a new champion may give up against the current one.
    max_clean_regression: float


@dataclass(frozen=True)
class SweepConfig:
    """A grid of hardening runs (``iocane sweep``, flows/sweep.py). An empty list keeps the
    params' own value, so the default grid is the one point ``iocane run`` would train."""

    eps: tuple[float, ...] = ()  # train.eps values
    method: tuple[str, ...] = ()  # train.method values
    width: tuple[int, ...] = ()  # model.width values
    seed: tuple[int, ...] = ()  # seed values
    runner: Literal["local", "dask", "ray"] = "local"  # where the points run (Prefect runner)
    address: str | None = None  # the Dask or Ray cluster; none = a local one
    workers: int = 2  # local Dask cluster: worker processes, one thread each


@dataclass(frozen=True)
class ReportConfig:
    """What the run reports beyond robustness (iocane/reports/costs.py)."""

    price_per_hour: float | None = None  # the machine's price: the run's cost is estimated


@dataclass(frozen=True)
class Config:
    seed: int
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read params.yaml, apply ``SECTION.KEY=VALUE`` overrides, and validate everything."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(document).__name__}")
    for override in overrides:
        apply_override(document, override)
    return config_from_dict(document)


def apply_override(document: dict[str, Any], override: str) -> None:
    """Set ``section.key=value`` in a params document; the value is read as YAML (0.2, true)."""
    key, sep, raw_value = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {override!r}")
    try:
        value = yaml.safe_load(raw_value) if raw_value else None
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {key}: cannot read value {raw_value!r}: {error}") from None
    *parents, leaf = key.split(".")
    node = document
    for part in parents:
        # A section the file leaves out (an optional one, or a typo the loader then names).
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section of the params file")
        node = child
    node[leaf] = value


def config_from_dict(document: dict[str, Any]) -> Config:
    config = _build(Config, document, prefix="")
    validate(config)
    return config


def _build(cls: type, values: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the params file"
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_describe(values)}")
    hints = typing.get_type_hints(cls)
    fields = [field.name for field in dataclasses.fields(cls)]
    # Keys need not be strings in YAML (1:, true:): compare and report them as text.
    unknown = sorted(str(key) for key in values if key not in fields)
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]} (known keys in {where}: {', '.join(fields)})"
        )
    optional = {
        field.name
        for field in dataclasses.fields(cls)
        if field.default is not dataclasses.MISSING
        or field.default_factory is not dataclasses.MISSING
    }
    missing = [name for name in fields if name not in values and name not in optional]
    if missing:
        raise ConfigError(f"missing key {prefix}{missing[0]}")
    kwargs = {
        name: _coerce(hints[name], values[name], f"{prefix}{name}")
        for name in fields
        if name in values
    }
    return cls(**kwargs)


def _coerce(annotation: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, prefix=f"{key}.")
    origin = get_origin(annotation)
    if origin is Literal:
        choices = get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:  # tuple[X, ...]: a YAML list
        (inner, _) = get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        return tuple(_coerce(inner, item, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _coerce(inner, value, key)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = ""
            if isinstance(value, str) and _parses_as_float(value):
                hint = " (YAML reads 5e-4 as text: write 5.0e-4)"
            raise ConfigError(f"{key}: expected a number, got {_describe(value)}{hint}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a non-empty string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")  # a bug in this module


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def validate(config: Config) -> None:
    """Range and consistency checks that the types alone cannot express."""
    data, train, evaluate, gate = config.data, config.train, config.evaluate, config.gate
    registry = config.registry
    _require(config.seed >= 0, "seed", "must be >= 0")
    _require(0.0 < data.val_fraction < 0.5, "data.val_fraction", "must be in (0, 0.5)")
    _require(0.0 < data.test_fraction < 0.5, "data.test_fraction", "must be in (0, 0.5)")
    _require(data.limit_train >= 0, "data.limit_train", "must be >= 0 (0 = all)")
    _require(data.limit_test >= 0, "data.limit_test", "must be >= 0 (0 = all)")
    if data.dataset != "digits":
        _require(
            data.root is not None or data.download,
            "data.root",
            f"dataset {data.dataset} needs a root directory (or data.download: true)",
        )
    _require(config.model.width >= 0, "model.width", "must be >= 0 (0 = default)")
    _require(config.model.depth >= 0, "model.depth", "must be >= 0 (0 = default)")
    if config.model.name == "wide_resnet" and config.model.depth:
        _require((config.model.depth - 4) % 6 == 0, "model.depth", "wide_resnet needs depth 6n+4")
    _require(config.warmup.epochs >= 1, "warmup.epochs", "must be >= 1: the natural baseline")
    _require(train.epochs >= 1, "train.epochs", "must be >= 1")
    for section, optim in (("warmup", config.warmup), ("train", train)):
        _require(optim.batch_size >= 1, f"{section}.batch_size", "must be >= 1")
        _require(optim.lr > 0, f"{section}.lr", "must be > 0")
        _require(0 <= optim.momentum < 1, f"{section}.momentum", "must be in [0, 1)")
        _require(optim.weight_decay >= 0, f"{section}.weight_decay", "must be >= 0")
    _require(train.eps > 0, "train.eps", "must be > 0")
    if train.norm == "Linf":
        _require(train.eps <= 1, "train.eps", "a Linf eps above 1 covers the whole [0,1] image")
    _require(train.step_size > 0, "train.step_size", "must be > 0")
    _require(train.steps >= 1, "train.steps", "must be >= 1")
    _require(0 <= train.adv_weight <= 1, "train.adv_weight", "must be in [0, 1]")
    _require(train.trades_beta > 0, "train.trades_beta", "must be > 0")
    _require(train.alp_weight >= 0, "train.alp_weight", "must be >= 0")
    _require(train.free_replays >= 1, "train.free_replays", "must be >= 1")
    _require(train.nproc >= 1, "train.nproc", "must be >= 1 (1 = one process, no DDP)")
    _require(
        train.batch_size >= 2 * train.nproc,
        "train.batch_size",
        f"must be at least 2 per process ({2 * train.nproc} for train.nproc={train.nproc}): "
        "the global batch is split between the processes",
    )
    _require(train.multi_other_eps > 0, "train.multi_other_eps", "must be > 0")
    if train.norm == "L2":
        _require(
            train.multi_other_eps <= 1,
            "train.multi_other_eps",
            "the other norm is Linf: an eps above 1 covers the whole [0,1] image",
        )
    if train.method in ("pgd", "fgsm", "fgsm_rs", "multi", "alp"):
        _require(
            train.adv_weight > 0,
            "train.adv_weight",
            f"must be > 0 for train.method={train.method} (0 would be natural training)",
        )
    _require(
        0 <= train.eps_ramp_epochs <= train.epochs,
        "train.eps_ramp_epochs",
        f"must be in [0, train.epochs={train.epochs}]",
    )
    _require(evaluate.n_samples >= 0, "evaluate.n_samples", "must be >= 0 (0 = all)")
    _require(evaluate.batch_size >= 1, "evaluate.batch_size", "must be >= 1")
    for key in ("min_clean_accuracy", "max_clean_drop", "min_robust_accuracy"):
        _require(0 <= getattr(gate, key) <= 1, f"gate.{key}", "must be in [0, 1]")
    sweep = config.sweep
    for eps in sweep.eps:
        _require(eps > 0, "sweep.eps", f"{eps} must be > 0")
        if train.norm == "Linf":
            _require(eps <= 1, "sweep.eps", f"{eps}: a Linf eps above 1 covers the whole image")
    methods = get_args(typing.get_type_hints(TrainConfig)["method"])
    for method in sweep.method:
        _require(method in methods, "sweep.method", f"{method!r} is not one of {methods}")
    _require(all(w >= 0 for w in sweep.width), "sweep.width", "values must be >= 0 (0 = default)")
    _require(all(s >= 0 for s in sweep.seed), "sweep.seed", "values must be >= 0")
    _require(sweep.workers >= 1, "sweep.workers", "must be >= 1")
    price = config.report.price_per_hour
    _require(price is None or price >= 0, "report.price_per_hour", "must be >= 0 (or null)")
    _require(
        0 <= registry.max_clean_regression <= 1,
        "registry.max_clean_regression",
        "must be in [0, 1]",
    )
