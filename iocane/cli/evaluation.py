"""What ``iocane evaluate`` does once its params are valid: the params' prepared data, then the
evaluation of the model a URI or a file names (``iocane.registry.evaluate_any``).

The data is the params' (``--params``, ``--set data.*``): when ``data/prepared`` holds the prepare
stage's outputs for them (or the stage store holds them from an earlier run) it is used as it is;
otherwise the prepare stage's own function prepares it now, and the stage store records it, as a
run would (``prepared_for``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path

from iocane.base.config import Config
from iocane.base.errors import ModelFileError
from iocane.base.files import confined, read_json
from iocane.base.layout import Layout
from iocane.model_files import check_pytorch_model, resolve_model_uri
from iocane.pipeline.keys import stage_key
from iocane.pipeline.store import outputs_current, restore_run, save_run
from iocane.registry.evaluate_any import Evaluated, evaluate_any
from iocane.registry.login import check_tracking_login
from tasks.prepare import run_prepare

log = logging.getLogger("iocane")


def _replace_prepared(source: Layout, target: Layout) -> None:
    """Move ``source``'s prepared data over ``target``'s as prepare writes it: ``meta.json``
    (which vouches for the arrays) goes first and comes back last, so a stop in between leaves
    data that ``load_prepared`` refuses, never a mix it would accept."""
    target.prepared_meta.unlink(missing_ok=True)
    target.prepared_dir.mkdir(parents=True, exist_ok=True)
    arrays = [
        path for path in sorted(source.prepared_dir.iterdir()) if path != source.prepared_meta
    ]
    for stale in set(target.prepared_dir.iterdir()) - {
        target.prepared_dir / p.name for p in arrays
    }:
        if stale.is_file():
            stale.unlink()
    for path in arrays:
        os.replace(path, target.prepared_dir / path.name)
    os.replace(source.prepared_meta, target.prepared_meta)


def prepared_for(config: Config, layout: Layout) -> None:
    """Make ``data/prepared`` the prepare stage's outputs for ``config``.

    When the stage store has no record of the files on disk (``dvc repro`` made them, say), the
    data is prepared aside and compared by fingerprint: the same data leaves ``data/prepared``
    untouched (DVC's record of it stays valid; rewriting the archive would change its bytes),
    other data replaces it."""
    key = stage_key("prepare", config, layout)
    if outputs_current("prepare", key, layout) or restore_run("prepare", key, layout):
        return
    log.info("preparing %s for these params, to compare with data/prepared", config.data.dataset)
    scratch_root = layout.root / ".iocane"
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix="prepare-") as scratch:
        result = run_prepare(config, Layout(Path(scratch)))
        if _fingerprint(layout) == result.fingerprint:
            log.info("data/prepared holds the same data (fingerprint %s)", result.fingerprint[:12])
        else:
            log.info("data/prepared was missing or prepared from other params: replaced")
            _replace_prepared(Layout(Path(scratch)), layout)
    result = dataclasses.replace(result, path=str(layout.prepared_dir))
    # Stored as the flow's prepare task stores its result (Prefect's JSON encoding), so that a
    # later `iocane run` finds these outputs current; imported only here, where data is prepared.
    from prefect.serializers import JSONSerializer

    save_run("prepare", key, layout, json.loads(JSONSerializer().dumps(result)))


def _fingerprint(layout: Layout) -> str | None:
    try:
        return read_json(layout.prepared_meta).get("fingerprint")
    except (OSError, ValueError):
        return None


def check_sources(
    root: Path, *, uris: tuple[str | None, ...], files: tuple[str | None, ...]
) -> None:
    """Each given file exists; each given URI names an iocane version or an MLflow PyTorch
    model (a ``ModelFileError`` / ``ModelUriError`` naming it otherwise)."""
    for file in files:
        if file is not None and not (root / file).is_file():
            raise ModelFileError(f"model file {file} is missing")
    for uri in uris:
        if uri is not None:
            resolved = resolve_model_uri(uri, root)
            if not resolved.is_iocane_version:
                check_pytorch_model(resolved, root)


def evaluate_command(
    config: Config,
    root: Path,
    *,
    model_uri: str | None,
    model_file: str | None,
    baseline_uri: str | None,
    baseline_file: str | None,
    out: str | None,
) -> tuple[dict, Evaluated]:
    """Prepare the data, evaluate, and return what the command prints (the figures as JSON).
    A file that is missing or a URI that names no PyTorch model is refused first, before any
    data is prepared."""
    if out is not None:
        confined(Path(out), root, "--out")  # an --out outside the project: refused first
    if model_uri or baseline_uri:  # from the registry: a refused login exits 2 before any work
        check_tracking_login(root)
    check_sources(root, uris=(model_uri, baseline_uri), files=(model_file, baseline_file))
    prepared_for(config, Layout(root))
    result = evaluate_any(
        config,
        root=root,
        model_uri=model_uri,
        model_file=Path(model_file) if model_file else None,
        baseline_uri=baseline_uri,
        baseline_file=Path(baseline_file) if baseline_file else None,
        out=Path(out) if out else None,
    )
    printed = {"model": result.model, "version": result.version}
    if result.version is None and result.run_id:
        printed["run_id"] = result.run_id
    return {**printed, **result.metrics}, result
