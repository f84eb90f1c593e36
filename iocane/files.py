"""Crash-safe file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import hashlib
import json
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


def write_json(path: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    write_atomic(path, lambda stream: stream.write(text.encode()))


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
