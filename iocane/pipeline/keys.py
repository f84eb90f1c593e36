"""Prefect caching that follows the params, the data and the code, as DVC's does.

A stage's cache key is the sha256 of the project root, the params the stage reads (the keys
dvc.yaml lists for it), the content of each file it reads, and the source of the code it runs.
It is never a hash of a pickled tensor: models and data travel between tasks as paths and
hashes, and the cached results are small JSON records.

A key alone is not enough when outputs live at fixed paths. After a run with ``train.eps=0.05``
the result stored for ``train.eps=0.1`` is still in Prefect's store, but ``checkpoints/train``
now holds the other model. So every stage that completes records its key and the sha256 of its
outputs in ``.iocane/stages/STAGE.json``, and the flow lets a stage use a stored result only
while the files on disk are the ones that key produced; otherwise the stage runs again and
overwrites the stored result. (Going back to an earlier setting recomputes it: ``dvc exp`` and
DVC's run cache are the tools that restore old outputs.)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iocane.config import Config
from iocane.files import read_json, sha256_file, write_json
from iocane.layout import Layout

# Where the packages iocane's stages import live (the repository root in a checkout).
CODE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StageSpec:
    """What a stage reads and writes. ``dvc.yaml`` declares the same (tests/test_dvc.py checks)."""

    name: str
    params: tuple[str, ...]  # dotted params keys
    code: tuple[str, ...]  # source files or package directories, relative to CODE_ROOT
    inputs: tuple[str, ...]  # files from earlier stages, relative to the project root
    outputs: tuple[str, ...]  # files this stage writes that later stages or people read


def _optim_keys(section: str) -> tuple[str, ...]:
    keys = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_schedule")
    return tuple(f"{section}.{key}" for key in keys)


RUNTIME_KEYS = ("runtime.precision", "runtime.compile")

# The code both training stages run (fit and what it calls): whole engine areas, so a helper
# that moves within an area cannot fall out of the key.
TRAINING_CODE = ("iocane/data", "iocane/training", "iocane/modelio.py", "models")

STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "prepare",
            params=(
                "seed",
                "data.dataset",
                "data.root",
                "data.download",
                "data.val_fraction",
                "data.test_fraction",
                "data.limit_train",
                "data.limit_test",
            ),
            code=("tasks/prepare.py", "iocane/data"),
            inputs=(),
            outputs=("data/prepared/arrays.npz", "data/prepared/meta.json"),
        ),
        StageSpec(
            "warmup",
            params=(
                "seed",
                "model.name",
                "model.width",
                "model.depth",
                *_optim_keys("warmup"),
                *RUNTIME_KEYS,
            ),
            code=("tasks/warmup.py", *TRAINING_CODE),
            inputs=("data/prepared/meta.json",),
            outputs=("checkpoints/warmup/model.pt", "metrics/warmup.json", "plots/warmup.csv"),
        ),
        StageSpec(
            "train",
            params=(
                "seed",
                "train.method",
                *_optim_keys("train"),
                "train.norm",
                "train.eps",
                "train.step_size",
                "train.steps",
                "train.random_start",
                "train.adv_weight",
                "train.eps_ramp_epochs",
                "train.trades_beta",
                "train.alp_weight",
                "train.free_replays",
                "train.multi_other_eps",
                "train.select",
                "train.nproc",
                *RUNTIME_KEYS,
            ),
            code=("tasks/train.py", *TRAINING_CODE, "attacks"),
            inputs=("data/prepared/meta.json", "checkpoints/warmup/model.pt"),
            outputs=("checkpoints/train/model.pt", "metrics/train.json", "plots/train.csv"),
        ),
        StageSpec(
            "evaluate",
            params=(
                "seed",
                "train.norm",
                "train.eps",
                "evaluate.n_samples",
                "evaluate.batch_size",
                "evaluate.preset",
                "evaluate.extra_attacks",
            ),
            code=(
                "tasks/evaluate.py",
                "iocane/robustness",
                "iocane/reports",
                *TRAINING_CODE,
                "attacks",
            ),
            inputs=(
                "data/prepared/meta.json",
                "checkpoints/warmup/model.pt",
                "checkpoints/train/model.pt",
            ),
            outputs=(
                "metrics/evaluate.json",
                "reports/robustness.md",
                "plots/robustness_curves.json",
                "plots/robustness_curves.png",
                "plots/adversarial_examples.png",
                "plots/perceptual_alignment.png",
            ),
        ),
        StageSpec(
            "gate",
            params=(
                "gate.min_clean_accuracy",
                "gate.max_clean_drop",
                "gate.min_robust_accuracy",
                "gate.require_trusted",
            ),
            code=("tasks/gate.py", "iocane/robustness/gate.py"),
            inputs=("metrics/evaluate.json",),
            outputs=("metrics/gate.json",),
        ),
        StageSpec(
            "register",
            params=(
                "registry.model_name",
                "registry.max_clean_regression",
                "report.price_per_hour",
            ),
            code=("tasks/register.py", "iocane/registry", "iocane/reports"),
            inputs=(
                "data/prepared/meta.json",
                "metrics/warmup.json",
                "metrics/train.json",
                "metrics/gate.json",
                "metrics/evaluate.json",
                "checkpoints/warmup/model.pt",
                "checkpoints/train/model.pt",
            ),
            outputs=("reports/registration.json", "reports/model_card.md"),
        ),
    )
}


def param_values(config: Config, keys: tuple[str, ...]) -> dict[str, Any]:
    tree = config.to_dict()
    values = {}
    for key in keys:
        node: Any = tree
        for part in key.split("."):
            node = node[part]
        values[key] = node
    return values


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


def _file_hash(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def stage_key(stage: str, config: Config, layout: Layout) -> str:
    """The cache key of ``stage`` for this config in this project, from what is on disk now."""
    spec = STAGES[stage]
    inputs: dict[str, Any] = {name: _file_hash(layout.root / name) for name in spec.inputs}
    if stage == "prepare":
        inputs["raw"] = raw_data_signature(config)
    payload = {
        "stage": stage,
        "root": str(layout.root.resolve()),
        "params": param_values(config, spec.params),
        "inputs": inputs,
        "code": code_version(spec.code),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _outputs(stage: str, layout: Layout) -> dict[str, str | None]:
    return {name: _file_hash(layout.root / name) for name in STAGES[stage].outputs}


def record_outputs(stage: str, config: Config, layout: Layout) -> None:
    """After ``stage`` ran: its key and the hashes of the outputs that key produced."""
    record = {"key": stage_key(stage, config, layout), "outputs": _outputs(stage, layout)}
    write_json(layout.stage_record(stage), record)


def outputs_current(stage: str, config: Config, layout: Layout) -> bool:
    """Whether the files on disk are the ones ``stage`` produced under its current key."""
    try:
        record = read_json(layout.stage_record(stage))
    except (FileNotFoundError, ValueError):
        return False
    return record.get("key") == stage_key(stage, config, layout) and record.get(
        "outputs"
    ) == _outputs(stage, layout)
