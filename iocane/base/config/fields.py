"""What every section of the params tree shares: the strict, closed, frozen base model, YAML
lists as tuples, a rule between keys, and the value types more than one section uses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from iocane.base.config_errors import Rule, describe
from iocane.base.recipe_registry import METHOD_NAMES

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "svhn", "folder")
MODELS = ("small_cnn", "madry_cnn", "compact_cnn", "preact_resnet18", "wide_resnet", "ibp_cnn")
NORMS = ("Linf", "L2")

# train.method: the names in the recipe table (iocane/base/recipe_registry.py), as a Literal so
# the JSON schema keeps its enum.
Method = Literal[METHOD_NAMES]  # type: ignore[valid-type]
Text = Annotated[str, Field(min_length=1)]  # an empty string is never a useful value


def _as_tuple(value: Any) -> tuple[Any, ...]:
    """A YAML list becomes a tuple (frozen, hashable); anything else is refused by name."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise Rule("", f"expected a list, got {describe(value)}")


def listed(item: Any) -> Any:
    """The type of a YAML list of ``item``: a tuple, so that the frozen tree stays hashable."""
    return Annotated[tuple[item, ...], BeforeValidator(_as_tuple)]


def require(condition: bool, key: str, message: str) -> None:
    """A rule between keys: when ``condition`` fails, the error names ``key`` of the section."""
    if not condition:
        raise Rule(key, message)


class Section(BaseModel):
    """What every part of the tree shares: strict, closed, immutable, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()
