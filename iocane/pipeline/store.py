"""A content-addressed store of stage outputs, so that revisiting a configuration restores its
files in seconds instead of recomputing them (what DVC's run-cache does for ``dvc repro``).

When a stage completes, each of its outputs (the files of its ``outs``, ``metrics`` and
``plots`` in dvc.yaml) goes to ``.iocane/cache/files/<sha256>``, and a run record
``.iocane/cache/runs/<stage>/<key>.json`` maps their relative paths to those hashes, beside the
stage's small JSON result. When a key comes back while the files on disk are another run's,
the record's files are put back. Files enter and leave the store as hard links where the file
system allows (iocane writes by rename, so a link never sees a later write; see
``iocane.base.files.write_atomic``), as copies where it does not. Every stored file is checked
against its hash before anything is restored: a missing or corrupt entry restores nothing and
the stage runs again. The store only grows, as DVC's cache does; deleting ``.iocane/cache``
is always safe and costs only recomputation.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from iocane.base.files import confined, read_json, sha256_file, write_json
from iocane.base.layout import Layout
from iocane.pipeline.keys import content_hashes, files_of, stage_spec

log = logging.getLogger("iocane")


def _run_record(layout: Layout, stage: str, key: str) -> Path:
    return layout.stage_cache_dir / "runs" / stage / f"{key}.json"


def _blob(layout: Layout, digest: str) -> Path:
    return layout.stage_cache_dir / "files" / digest


def output_hashes(stage: str, layout: Layout) -> dict[str, str] | None:
    """Relative path -> sha256 of every file ``stage`` wrote; None when one of its declared
    outputs is missing (such a run cannot be restored whole)."""
    outputs = stage_spec(stage).outputs
    if any(not files_of(layout.root, output) for output in outputs):
        return None
    return content_hashes(layout.root, outputs)


def _read_record(stage: str, key: str, layout: Layout) -> dict | None:
    try:
        record = read_json(_run_record(layout, stage, key))
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("outputs"), dict):
        return None
    return record


def stored_result(stage: str, key: str, layout: Layout) -> tuple[bool, Any]:
    """``(True, result)`` when the files on disk are the outputs ``key`` produced, with the
    result that run returned; ``(False, None)`` otherwise."""
    record = _read_record(stage, key, layout)
    if record is None or record["outputs"] != output_hashes(stage, layout):
        return False, None
    return True, record.get("result")


def outputs_current(stage: str, key: str, layout: Layout) -> bool:
    """Whether the files on disk are the ones ``stage`` produced under ``key``."""
    return stored_result(stage, key, layout)[0]


def _link_or_copy(source: Path, destination: Path) -> None:
    """``destination`` becomes ``source``'s content in one rename: a reader sees the old file or
    the new one. A hard link where possible, else a copy."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temp = destination.with_name(f".{destination.name}.{os.getpid()}.store.tmp")
    temp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, temp)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(source, temp)
        os.replace(temp, destination)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def save_run(stage: str, key: str, layout: Layout, result: Any) -> bool:
    """After ``stage`` ran under ``key``: its outputs into the store, then the run record
    (written last, so a record always names complete files). ``result`` is JSON-serialisable.
    Returns whether the run was stored (not when a declared output is missing)."""
    outputs = output_hashes(stage, layout)
    if outputs is None:
        log.warning("%s: a declared output is missing; this run is not stored", stage)
        return False
    for relative, digest in outputs.items():
        blob = _blob(layout, digest)
        if not blob.is_file():
            _link_or_copy(layout.root / relative, blob)
    write_json(_run_record(layout, stage, key), {"outputs": outputs, "result": result})
    return True


def _intact(layout: Layout, outputs: dict[str, str]) -> bool:
    for digest in set(outputs.values()):
        blob = _blob(layout, digest)
        if not blob.is_file() or sha256_file(blob) != digest:
            return False
    return True


def restore_run(stage: str, key: str, layout: Layout) -> bool:
    """Put back the outputs ``stage`` produced under ``key``, if that run is in the store and
    every one of its files is intact; returns whether it did. Files a directory output holds
    beyond the stored run's (other than transient ones) are removed, so the directory is the
    one the run wrote."""
    record = _read_record(stage, key, layout)
    if record is None:
        return False
    outputs: dict[str, str] = record["outputs"]
    if not _intact(layout, outputs):
        log.warning(
            "%s: the stored outputs of run %s are missing or corrupt; running the stage",
            stage,
            key[:12],
        )
        return False
    for relative, digest in outputs.items():
        destination = confined(Path(relative), layout.root, f"{stage} output")
        _link_or_copy(_blob(layout, digest), destination)
    for output in stage_spec(stage).outputs:
        for relative in files_of(layout.root, output):
            if relative not in outputs:
                (layout.root / relative).unlink()
    log.info(
        "%s: restored %d file(s) of an earlier run with the same params, inputs and code "
        "from %s (key %s); not running it again",
        stage,
        len(outputs),
        layout.stage_cache_dir.relative_to(layout.root),
        key[:12],
    )
    return True
