"""Crash-safe file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


class OutsideProject(ValueError):
    """An output path that resolves outside the project directory."""


def confined(path: Path, root: Path, what: str) -> Path:
    """``path`` resolved (symlinks, ``..``) and checked to lie inside ``root``: iocane writes
    only into the project, whatever a flag or a registered model's name says."""
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise OutsideProject(
            f"{what} {path} resolves to {resolved}, outside the project {root.resolve()}; "
            "iocane writes only inside the project directory"
        )
    return resolved


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write(handle)`` into a temp file beside ``path``, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


class NonFiniteValue(ValueError):
    """A NaN or an infinity on its way into a JSON file."""


def write_json(path: Path, payload: Any) -> None:
    """``payload`` as strict JSON: a NaN or an infinity raises ``NonFiniteValue`` naming where it
    is, rather than writing ``NaN`` or ``Infinity``, which strict parsers reject. A figure that
    can legitimately be missing is ``None`` (``null``) at its source."""
    try:
        text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as error:
        where = ", ".join(non_finite_paths(payload)) or "a value"
        raise NonFiniteValue(f"{path}: {where} is not a finite number ({error})") from None
    write_atomic(path, lambda stream: stream.write(text.encode()))


def non_finite_paths(payload: Any, prefix: str = "") -> list[str]:
    """Where in a JSON-like tree the NaNs and infinities are, as dotted keys (``a.b[2]``)."""
    if isinstance(payload, float):
        return [] if math.isfinite(payload) else [prefix or "the value"]
    if isinstance(payload, dict):
        items = (
            (f"{prefix}.{key}" if prefix else str(key), value) for key, value in payload.items()
        )
    elif isinstance(payload, (list, tuple)):
        items = ((f"{prefix}[{index}]", value) for index, value in enumerate(payload))
    else:
        return []
    return [path for key, value in items for path in non_finite_paths(value, key)]


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda stream: stream.write(text.encode()))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it first") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
