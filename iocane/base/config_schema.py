"""The JSON schema of params files, for editors: ``params.schema.json`` (named on params.yaml's
first line) and ``configs/params.overlay.schema.json`` (overlays, where no key is required).
Generated from the config tree; ``iocane schema`` prints it and a test keeps the committed files
equal to what this module generates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iocane.base.config import Config


def params_json_schema(overlay: bool = False) -> dict[str, Any]:
    """The JSON schema of a params file, for editors (params.schema.json). ``overlay``: the
    schema of a file under configs/ that ``extends`` another, where no key is required."""
    schema = Config.model_json_schema()
    schema["properties"]["extends"] = {
        "type": "string",
        "description": "a params file (relative to this one) whose keys this file overrides",
    }
    if overlay:
        schema = _without_required(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# The committed schema files (relative to the project root), and whether each is an overlay's.
SCHEMA_FILES = {"params.schema.json": False, "configs/params.overlay.schema.json": True}


def params_schema_text(overlay: bool = False) -> str:
    return json.dumps(params_json_schema(overlay), indent=2) + "\n"


def write_params_schemas(root: Path) -> None:
    """Regenerate the committed schema files after a change to the tree (a test compares)."""
    for name, overlay in SCHEMA_FILES.items():
        (root / name).write_text(params_schema_text(overlay))


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_required(value) for key, value in node.items() if key != "required"}
    if isinstance(node, list):
        return [_without_required(value) for value in node]
    return node
