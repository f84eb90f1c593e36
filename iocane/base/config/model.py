"""The ``model`` section: iocane's own architectures or a user's builder, its normalisation and
the weights it starts from."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, model_validator

from iocane.base.config.fields import MODELS, Section, Text, listed, require
from iocane.base.config_errors import Rule, describe


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
        "ibp_cnn (certified training) | torchvision:<builder> | timm:<name> | <module>:<factory>"
    )
    width: int = Field(ge=0, description="0 = the architecture's default width")
    depth: int = Field(ge=0, description="wide_resnet only; 0 = default (28)")
    mean: listed(Stat) | None = Field(  # type: ignore[valid-type]
        default=None, description="input normalisation per channel; null = the data's mean"
    )
    std: listed(Stat) | None = Field(  # type: ignore[valid-type]
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
            require((self.depth - 4) % 6 == 0, "depth", "wide_resnet needs depth 6n+4")
        if ":" in self.name:
            require(not self.width, "width", f"applies to iocane's own models, not {self.name}")
            require(not self.depth, "depth", f"applies to iocane's own models, not {self.name}")
        if self.std is not None:
            require(all(s > 0 for s in self.std), "std", "every std must be positive")
        return self
