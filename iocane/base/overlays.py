"""Reading params files: YAML, overlays that ``extends`` another file, ``--set`` overrides.

A params file under configs/ holds only what differs from params.yaml::

    extends: ../params.yaml        # relative to this file
    data:
      dataset: fashion_mnist

The files are merged deepest first (a mapping merges key by key, anything else, lists
included, is replaced: the overlay wins), and the merged document is validated as a whole
(``iocane.base.config``). DVC's ``dvc exp run`` reads params.yaml alone, which therefore stays
complete; overlays are for ``iocane run --params``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from iocane.base.config_errors import ConfigError

EXTENDS = "extends"

# (file, its own document): the file named first, then the one it extends, and so on.
Files = list[tuple[Path, dict[str, Any]]]


def read_params(path: Path) -> tuple[dict[str, Any], Files]:
    """The merged document of ``path`` and the files it extends, and each file's own part."""
    files: Files = []
    while True:
        document = _read_mapping(path)
        files.append((path, document))
        base = document.pop(EXTENDS, None)
        if base is None:
            break
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: {EXTENDS}: expected a params file's path, got {base!r}")
        following = Path(os.path.normpath(path.parent / base))
        if any(following.resolve() == seen.resolve() for seen, _ in files):
            raise ConfigError(f"{path}: {EXTENDS}: {base} leads back to {following} (a circle)")
        if not following.is_file():
            raise ConfigError(f"{path}: {EXTENDS}: params file not found: {following}")
        path = following
    merged: dict[str, Any] = {}
    for _, document in reversed(files):
        merged = merge(merged, document)
    return merged, files


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: mappings merge key by key; other values (lists) replace."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def origin(key: str | None, files: Files) -> Path:
    """The file that set ``key`` (the first file when none did: a missing key, a rule)."""
    for path, document in files:
        node: Any = document
        for part in (key or "").split("."):
            node = node.get(part) if isinstance(node, dict) and part in node else _ABSENT
        if node is not _ABSENT and key:
            return path
    return files[0][0]


_ABSENT = object()


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the params file {path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(document).__name__}")
    return document


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
