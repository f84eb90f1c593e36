"""The training sections: ``warmup`` (natural training), ``train`` (adversarial training) and
``runtime`` (how training uses the hardware)."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

from iocane.base.config.fields import Method, Section, require
from iocane.base.config_errors import Rule
from iocane.base.recipe_registry import RECIPES
from iocane.base.start_defaults import by_start_description, nullable_number
from iocane.base.threat_budgets import BudgetError, check_threats


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


class TrainSpatialBudget(Section):
    """``train.threats.spatial``: the box of rotations and shifts the first-order spatial attack
    searches (no grid: training uses the gradient over angle and shifts)."""

    rotate: float = Field(description="degrees, 0 to 180")
    translate: float = Field(description="pixels per axis")


class TrainThreatsConfig(Section):
    """``train.threats``: the threats ``multi_threat`` trains against, with the budget format of
    ``evaluate.threats``, limited to the threats with a gradient attack (no corruptions)."""

    linf: float | None = Field(None, description="eps, pixels in [0, 1]")
    l2: float | None = Field(None, description="eps, pixels in [0, 1]")
    l0: int | None = Field(None, description="pixels changed (all channels of a pixel count once)")
    patch: int | None = Field(None, description="side of the square patch, in pixels")
    spatial: TrainSpatialBudget | None = Field(None, description="rotate (deg), translate (px)")

    @model_validator(mode="after")
    def _budgets_run(self) -> Self:
        try:
            check_threats(self.budgets())
        except BudgetError as error:
            raise Rule(error.key, error.message) from None
        return self

    def budgets(self) -> dict[str, Any]:
        """The threats set, in the threat table's order, their budgets as plain values."""
        budgets: dict[str, Any] = {}
        for name in ("linf", "l2", "l0", "patch", "spatial"):
            value = getattr(self, name)
            if value is not None:
                budgets[name] = value.to_dict() if isinstance(value, Section) else value
        return budgets


class TrainConfig(OptimConfig):
    """Adversarial training, continuing from the warmup weights (iocane/training/recipes/)."""

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
    # Optional: params files written before them train as they always did (only multi_threat
    # reads them, and refuses to run without threats).
    threats: TrainThreatsConfig = Field(
        TrainThreatsConfig(),
        description="multi_threat: threat -> budget (linf, l2, l0, patch, spatial); {} = none",
    )
    threat_mode: Literal["mixed", "worst"] = Field(
        "mixed",
        description="multi_threat: mixed = one threat per batch in turn; worst = per sample the "
        "highest-loss example of all the threats",
    )
    # Optional: params files written before them train as they always did (only the certified
    # recipes ibp and crown_ibp read them; the defaults are Gowal et al.'s and Zhang et al.'s).
    kappa_start: float = Field(
        1.0, ge=0, le=1, description="ibp, crown_ibp: weight of the clean loss at the ramp's start"
    )
    kappa_end: float = Field(
        0.5, ge=0, le=1, description="ibp, crown_ibp: weight of the clean loss after the ramp"
    )
    beta_start: float = Field(
        1.0, ge=0, le=1, description="crown_ibp: weight of the CROWN-IBP bound at the ramp's start"
    )
    beta_end: float = Field(
        0.0, ge=0, le=1, description="crown_ibp: weight of the CROWN-IBP bound after the ramp"
    )
    # Optional: params files written before it train as they always did (only gaussian reads it).
    noise_sigma: float = Field(
        0.25, gt=0, description="gaussian: std of the noise added to [0,1] training images"
    )
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
            require(self.eps <= 1, "eps", "a Linf eps above 1 covers the whole [0,1] image")
        return self

    @model_validator(mode="after")
    def _two_images_per_process(self) -> Self:
        require(
            self.batch_size >= 2 * self.nproc,
            "batch_size",
            f"must be at least 2 per process ({2 * self.nproc} for train.nproc={self.nproc}): "
            "the global batch is split between the processes",
        )
        return self

    @model_validator(mode="after")
    def _other_norm_within_the_image(self) -> Self:
        if self.norm == "L2":
            require(
                self.multi_other_eps <= 1,
                "multi_other_eps",
                "the other norm is Linf: an eps above 1 covers the whole [0,1] image",
            )
        return self

    @model_validator(mode="after")
    def _adversarial_methods_need_adversarial_loss(self) -> Self:
        if RECIPES[self.method].weighs_adversarial_loss:
            require(
                self.adv_weight > 0,
                "adv_weight",
                f"must be > 0 for train.method={self.method} (0 would be natural training)",
            )
        return self

    @model_validator(mode="after")
    def _multi_threat_needs_threats(self) -> Self:
        if self.method == "multi_threat":
            require(
                bool(self.threats.budgets()),
                "threats",
                "train.method=multi_threat needs at least one threat, e.g. {linf: 0.1, l0: 2}",
            )
        return self

    @model_validator(mode="after")
    def _ramp_within_training(self) -> Self:
        require(
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
