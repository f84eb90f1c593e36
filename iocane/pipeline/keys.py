"""Prefect caching that follows the params, the data and the code, as DVC's does.

What each stage reads and writes is written down once, in ``dvc.yaml``; this module reads it.
A stage's cache key is the sha256 of the project root, the params its ``params:`` list names
(whole sections where the stage owns one, so that a key added to a section is keyed at once),
the content of its data deps (files, or the files of a directory that matter) and the source of
its code deps (paths under ``tasks/``, ``iocane/``, ``models/``, ``attacks/``). It is never a
hash of a pickled tensor: models and data travel between tasks as paths and hashes, and the
cached results are small JSON records.

A key alone is not enough when outputs live at fixed paths: after a run with
``train.eps=0.05``, ``checkpoints/train`` holds the other model. ``iocane.pipeline.store`` keeps
each key's outputs (the ``outs``, ``metrics`` and ``plots`` of its stage) by content and puts
them back when a configuration is revisited.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

from iocane.base.config import Config, Section
from iocane.base.files import sha256_file
from iocane.base.layout import Layout
from iocane.model_files import is_model_uri, resolve_model_uri

# Where the packages iocane's stages import live (the repository root in a checkout).
CODE_ROOT = Path(__file__).resolve().parents[2]

# The stages' deps are read from the dvc.yaml beside the code, not from the project being run:
# the deps describe the code that runs, which is this code whatever the project is (a temp
# project in the tests, a user's project with its own dvc.yaml or none at all). DVC reads the
# same file when the project is this repository. (PyYAML, not ``dvc.api``/``dvc.repo``: importing
# those takes about 0.4 s and 25 MB more, and they need a DVC repository at the project root.)
DVC_FILE = "dvc.yaml"

# Deps under these folders are code: they feed the code hash, read from CODE_ROOT. Every other
# dep is data or an earlier stage's output, read from the project root.
CODE_DEPS = ("tasks", "iocane", "models", "attacks")

# The params sections no stage reads, and why; every other key of the params tree must be in
# some stage's ``params:`` (a test holds dvc.yaml to the typed config, and to what each stage
# reads while it runs). Name a section here only when changing it cannot change any stage's
# outputs: a cached stage would otherwise return an old result.
NOT_STAGE_PARAMS = {
    "sweep": "read by `iocane sweep` alone, which turns each grid point into train and model "
    "keys that the points' stages read; `iocane run` and `dvc repro` ignore it",
}

# Files in a stage's directory that are not part of what it produced: per-epoch and partial
# training checkpoints (the resume state, kept per run key by ``iocane.training``) and the temp
# files of writes in progress. They are neither hashed as inputs nor stored as outputs.
TRANSIENT_FILES = ("epoch-*.pt", "partial.pt", ".*")


@dataclass(frozen=True)
class StageSpec:
    """What a stage reads and writes, as ``dvc.yaml`` declares it."""

    name: str
    params: tuple[str, ...]  # dotted params keys
    code: tuple[str, ...]  # source files or package directories, relative to CODE_ROOT
    inputs: tuple[str, ...]  # data and earlier stages' outputs, relative to the project root
    outputs: tuple[str, ...]  # its outs, metrics and plots: files or directories


def _entry_path(entry: str | dict) -> str:
    """A dvc.yaml list entry: ``path`` or ``{path: {options}}``."""
    return entry if isinstance(entry, str) else next(iter(entry))


def _spec(name: str, stage: dict) -> StageSpec:
    # A templated dep (``${data.root}``) is a path a param names: the key takes it from the
    # config (``param_file_signatures``), not from dvc.yaml's text.
    deps = [_entry_path(entry) for entry in stage.get("deps", []) if "${" not in _entry_path(entry)]
    code = tuple(dep for dep in deps if Path(dep).parts[0] in CODE_DEPS)
    params = stage.get("params", [])
    if not all(isinstance(key, str) for key in params):
        raise ValueError(f"{DVC_FILE}: stage {name}: params must be keys of params.yaml")
    return StageSpec(
        name=name,
        params=tuple(params),
        code=code,
        inputs=tuple(dep for dep in deps if dep not in code),
        outputs=tuple(
            _entry_path(entry)
            for section in ("outs", "metrics", "plots")
            for entry in stage.get(section, [])
        ),
    )


@functools.cache
def _read_specs(path: Path, modified_ns: int) -> dict[str, StageSpec]:
    stages = yaml.safe_load(path.read_text())["stages"]
    return {name: _spec(name, stage) for name, stage in stages.items()}


def stage_specs() -> dict[str, StageSpec]:
    """Every stage of ``CODE_ROOT/dvc.yaml``, in pipeline order (read again when it changes)."""
    path = CODE_ROOT / DVC_FILE
    try:
        return _read_specs(path, path.stat().st_mtime_ns)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing: the stage cache reads each stage's deps from the dvc.yaml "
            "beside the code (install iocane from its repository: pip install -e .)"
        ) from None


def stage_spec(stage: str) -> StageSpec:
    return stage_specs()[stage]


def param_values(config: Config, keys: tuple[str, ...]) -> dict[str, Any]:
    """The values of dotted params keys; a section's key (``train``) is its whole subtree, so a
    key added to the section later is in it without anyone listing it."""
    values = {}
    for key in keys:
        node: Any = config
        for part in key.split("."):
            node = getattr(node, part)
        values[key] = node.to_dict() if isinstance(node, Section) else node
    return values


def stage_params(stage: str, config: Config) -> dict[str, Any]:
    """The params ``stage`` reads, as dvc.yaml declares them: what its cache key, its training
    checkpoints' run key and the registered evidence hash, so that no list is kept twice."""
    return param_values(config, stage_spec(stage).params)


@functools.cache
def code_version(paths: tuple[str, ...]) -> str:
    """sha256 of the source a stage runs (cached per process: code does not change under it)."""
    digest = hashlib.sha256()
    for relative in paths:
        path = CODE_ROOT / relative
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(CODE_ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def stage_code_version(stage: str) -> str:
    """sha256 of the code ``stage`` runs (its code deps in dvc.yaml). The training loop's
    checkpoint run key can use it, so that the list of training code is not kept twice."""
    return code_version(stage_spec(stage).code)


def raw_data_signature(config: Config) -> list:
    """What identifies the raw dataset ``prepare`` reads: the bundled digits by the version of
    scikit-learn that ships them; files under ``data.root`` by name, size and modification time
    (new data arriving at the same path changes the key without hashing gigabytes)."""
    if config.data.dataset == "digits":
        import sklearn

        return ["sklearn", sklearn.__version__]
    root = Path(config.data.root).expanduser() if config.data.root else None
    if root is None or not root.is_dir():
        return [str(root)]
    entries = []
    for directory, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            stat = (Path(directory) / name).stat()
            relative = os.path.relpath(Path(directory) / name, root)
            entries.append([relative, stat.st_size, stat.st_mtime_ns])
    return entries


def param_file_signatures(stage: str, config: Config, root: Path) -> dict[str, Any]:
    """What the files that params name hold, for the stages that read them: the raw data
    (``data.root``) for prepare; for warmup, the weights (``model.weights``: a file's content,
    or the version and run a model URI resolves to) and the user's model code (``model.name:
    <module>:<factory>``). ``root`` is the project directory, which a relative
    ``model.weights`` is read from. New weights at the same path or URI, or an edited factory,
    must not restore the old stage from the cache."""
    if stage == "prepare":
        return {"raw": raw_data_signature(config)}
    if stage != "warmup":
        return {}
    signatures: dict[str, Any] = {}
    weights = config.model.weights
    if is_model_uri(weights):
        # An alias moves: what the URI names now (version and run), not the URI's text.
        signatures["weights"] = resolve_model_uri(weights, root).lineage()
    elif weights is not None:
        path = root / Path(weights).expanduser()
        signatures["weights"] = file_hash(path) if path.is_file() else None
    source = config.model.name.partition(":")[0]
    if ":" in config.model.name and source not in ("torchvision", "timm"):
        signatures["factory"] = factory_source_hash(source)
    return signatures


def factory_source_hash(module: str) -> str | None:
    """sha256 of the source of the user's model module (a package: all its ``.py`` files),
    found the way ``models.sources`` imports it (the project directory first) without running
    it; None when it cannot be found (the warmup then says why)."""
    import importlib.util

    from models.sources import project_on_path

    project_on_path()
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or found.origin is None or not Path(found.origin).is_file():
        return None
    origin = Path(found.origin)
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def transient_file(name: str) -> bool:
    """Whether a file of this name is scratch, not a stage's product (``TRANSIENT_FILES``)."""
    return any(fnmatch(name, pattern) for pattern in TRANSIENT_FILES)


def files_of(root: Path, relative: str) -> list[str]:
    """The files a dep or output ``relative`` stands for, relative to ``root``: itself, or every
    file of the directory except transient ones; none when it is missing."""
    path = root / relative
    if path.is_file():
        return [relative]
    if not path.is_dir():
        return []
    return sorted(
        file.relative_to(root).as_posix()
        for file in path.rglob("*")
        if file.is_file() and not any(transient_file(part) for part in file.relative_to(path).parts)
    )


@functools.lru_cache(maxsize=4096)
def _hash_of(path: Path, identity: tuple[int, ...]) -> str:
    return sha256_file(path)


def file_hash(path: Path) -> str:
    """sha256 of a file, computed once per process for the same file (inode, size, mtime,
    ctime): a key is computed several times per run, and a write is a rename (a new inode)."""
    stat = path.stat()
    identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return _hash_of(path.resolve(), identity)


def content_hashes(root: Path, paths: tuple[str, ...]) -> dict[str, str]:
    """Relative path -> sha256 for every file that ``paths`` (files or directories) stand for."""
    return {name: file_hash(root / name) for path in paths for name in files_of(root, path)}


def _input_hash(root: Path, relative: str) -> str | None:
    hashes = content_hashes(root, (relative,))
    if not hashes:
        return None
    if list(hashes) == [relative]:
        return hashes[relative]
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def stage_key(stage: str, config: Config, layout: Layout) -> str:
    """The cache key of ``stage`` for this config in this project, from what is on disk now."""
    spec = stage_spec(stage)
    inputs: dict[str, Any] = {name: _input_hash(layout.root, name) for name in spec.inputs}
    inputs.update(param_file_signatures(stage, config, layout.root))
    payload = {
        "stage": stage,
        "root": str(layout.root.resolve()),
        "params": stage_params(stage, config),
        "inputs": inputs,
        "code": code_version(spec.code),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def evidence_key(config: Config, layout: Layout) -> str:
    """What identifies a registered version's evidence: the project, the data (its fingerprint),
    every stage's params and code, and the weights of the natural and the hardened model.

    Not the bytes of the metrics files: they carry wall times, so a retrained copy of a model
    (the same data, params, code and weights, and so, every attack being seeded, the same
    figures) would never find its version. With this key it does, and ``register`` returns that
    version instead of registering a copy, whether the run's outputs were restored from the
    store or computed again."""
    specs = stage_specs()
    payload = {
        "root": str(layout.root.resolve()),
        "data": json.loads(layout.prepared_meta.read_text())["fingerprint"],
        "params": {name: stage_params(name, config) for name in specs},
        "code": {name: code_version(spec.code) for name, spec in specs.items()},
        "weights": {stage: file_hash(layout.model_file(stage)) for stage in ("warmup", "train")},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
