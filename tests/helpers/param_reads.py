"""Which params keys a piece of code reads: every field read from the typed config tree, and
every section (or the whole tree) turned into a dict, recorded while a stage runs.

The stage cache keys hash the params ``dvc.yaml`` declares for each stage; a key the stage
reads and does not declare is a stale result waiting to happen. This records what is read, so
a test can hold the declared lists to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from iocane.base.config import Config, Section


def section_paths() -> dict[type, str]:
    """Each section class of the tree -> its dotted path (the root's path is empty)."""
    paths: dict[type, str] = {Config: ""}
    for name, field in Config.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            paths[field.annotation] = name
    return paths


def leaf_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of every value of a params tree that is not itself a section."""
    keys = []
    for name, value in tree.items():
        key = f"{prefix}{name}"
        keys.extend(leaf_keys(value, f"{key}.") if isinstance(value, dict) else [key])
    return keys


@contextmanager
def recorded_reads() -> Iterator[set[str]]:
    """Yields a set that fills with the dotted params keys read inside the block: a field read
    (``config.train.eps``, or ``train = config.train; train.eps``), or every key of a section
    dumped with ``to_dict()``."""
    paths = section_paths()
    reads: set[str] = set()

    def prefix(section: object) -> str | None:
        path = paths.get(type(section))
        return None if path is None else (f"{path}." if path else "")

    def read_field(self: Section, name: str) -> Any:
        value = object.__getattribute__(self, name)
        fields = type(self).model_fields
        where = prefix(self)
        if where is not None and name in fields and not isinstance(value, Section):
            reads.add(where + name)
        return value

    def dump(self: Section) -> dict[str, Any]:
        tree = self.model_dump()
        where = prefix(self)
        if where is not None:
            reads.update(leaf_keys(tree, where))
        return tree

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Section, "__getattribute__", read_field)
        patch.setattr(Section, "to_dict", dump)
        yield reads
