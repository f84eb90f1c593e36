"""The environment variables iocane reads, in one place.

| variable | default | what it does |
|---|---|---|
| `IOCANE_DEVICE` | CUDA if present, else CPU | the torch device (`cpu`, `cuda:1`), DDP ranks too |
| `IOCANE_DATA_CACHE` | `~/.cache/iocane/datasets` | where dataset files are copied to be read |
| `IOCANE_USER` | the login name | who a promotion or rollback is recorded as |
| `IOCANE_MLFLOW_UI_URL` | the server, else `127.0.0.1:5000` | where the MLflow links point |
| `MLFLOW_TRACKING_URI` | the project's `mlflow.db` | the MLflow registry (MLflow reads it too) |
| `XDG_CACHE_HOME` | `~/.cache` | where the lock file for a registry server lives |
| `IOCANE_DDP_LAUNCHED` | unset | marks the workers of iocane's torchrun launcher (any value) |

An empty variable counts as unset. ``settings()`` reads the environment each time it is called,
never at import, so a test (or a launcher) can set a variable and see it take effect.
``resolve_device`` picks the device at run time: bad params must exit before torch loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import torch


class Settings(BaseSettings):
    """The variables in the table above, by their exact (upper-case) names."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, frozen=True)

    device: str | None = Field(None, validation_alias="IOCANE_DEVICE")
    data_cache: Path = Field(Path("~/.cache/iocane/datasets"), validation_alias="IOCANE_DATA_CACHE")
    user: str | None = Field(None, validation_alias="IOCANE_USER")
    mlflow_ui_url: str | None = Field(None, validation_alias="IOCANE_MLFLOW_UI_URL")
    tracking_uri: str | None = Field(None, validation_alias="MLFLOW_TRACKING_URI")
    cache_home: Path = Field(
        default_factory=lambda: Path.home() / ".cache", validation_alias="XDG_CACHE_HOME"
    )
    # Any value counts (the launcher sets "1"): a marker, never parsed, so it cannot fail.
    ddp_launched: str | None = Field(None, validation_alias="IOCANE_DDP_LAUNCHED")


def settings() -> Settings:
    """The environment as it is now (read afresh at every call)."""
    return Settings()


def tracking_uri(root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's sqlite registry (``mlflow.db`` in
    the project directory ``root``). Here, in the base, so that every layer that reads a model
    URI (the warmup's ``model.weights``, ``iocane evaluate``) resolves it in the same store."""
    return settings().tracking_uri or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def resolve_device() -> torch.device:
    """CUDA when present, else CPU; ``IOCANE_DEVICE`` overrides. Chosen at run time."""
    import torch  # here, not at import: bad params must exit before torch loads

    name = settings().device
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
