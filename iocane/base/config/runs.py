"""The optional sections about runs as a whole: ``sweep`` (a grid of hardening runs) and
``report`` (what the run reports beyond robustness)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from iocane.base.config.fields import Method, Section, Text, listed
from iocane.base.config.model import ModelName


class SweepConfig(Section):
    """A grid of hardening runs (``iocane sweep``, flows/sweep.py). An empty list keeps the
    params' own value, so the default grid is the one point ``iocane run`` would train."""

    eps: listed(Annotated[float, Field(gt=0)]) = Field((), description="train.eps values")  # type: ignore[valid-type]
    method: listed(Method) = Field((), description="train.method values")  # type: ignore[valid-type]
    width: listed(Annotated[int, Field(ge=0)]) = Field((), description="model.width values")  # type: ignore[valid-type]
    model: listed(ModelName) = Field((), description="model.name values (crossed with width)")  # type: ignore[valid-type]
    steps: listed(Annotated[int, Field(ge=1)]) = Field(  # type: ignore[valid-type]
        (), description="train.steps values; each sets train.step_size to 2.5 * eps / steps"
    )
    lr: listed(Annotated[float, Field(gt=0)]) = Field((), description="train.lr values")  # type: ignore[valid-type]
    budget_minutes: listed(Annotated[float, Field(ge=0)]) = Field(  # type: ignore[valid-type]
        (), description="train.budget_minutes values (0 = train.epochs)"
    )
    seed: listed(Annotated[int, Field(ge=0)]) = Field((), description="seed values")  # type: ignore[valid-type]
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
