"""The files the sweep's points share without copying them: a snapshot of the project's prepared
data (hard links), and the symlinks from each point's directory to it and to its warmup."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def snapshot(source: Path, destination: Path) -> Path:
    """The prepared data as it is now, for the whole sweep: hard links (no copy), which keep
    the old contents when a later ``iocane run`` replaces the project's files (writes are
    renames); a copy where links cannot be made."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        try:
            os.link(path, destination / path.name)
        except OSError:
            shutil.copy2(path, destination / path.name)
    return destination


def link_directory(link: Path, target: Path) -> None:
    """A symlink at `link` to the directory `target` (kept if one is there already): a point's
    layout reaches the sweep's shared data and warmup without copying them."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(target.resolve(), target_is_directory=True)
