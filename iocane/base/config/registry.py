"""The ``registry`` section: the registered model's name (filled from the data when null) and the
champion's clean-accuracy guard."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

from iocane.base.config.fields import Section, Text

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


def fill_registered_name(document: Any) -> Any:
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
