"""No stale result, by construction: every params key is in the cache key of the stages that
declare it (dvc.yaml's ``params:``, whole sections where a stage owns one), or named in
``NOT_STAGE_PARAMS`` with a reason; changing any key, one at a time, changes the keys of exactly
the stages that declare it, and the registered evidence.

What each stage actually reads while it runs is held to the same lists by
``tests/e2e/test_stage_params.py``."""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from iocane.base.config import Config, ConfigError, config_from_dict
from iocane.base.layout import Layout
from iocane.pipeline.keys import NOT_STAGE_PARAMS, evidence_key, stage_key, stage_specs
from tests.helpers.param_reads import leaf_keys
from tests.helpers.pipeline_params import write_tiny_params
from tests.unit.pipeline.test_caching import write_stage_files

STAGES = tuple(stage_specs())

# Keys whose changed value the type alone does not give (a null, a list, a name); the first
# candidate that validates is used. A new key that no candidate fits fails the test by name.
CANDIDATES: dict[str, list[Any]] = {
    "model.name": ["madry_cnn"],
    "model.mean": [[0.5]],
    "model.std": [[0.25]],
    "model.weights": ["base.pt"],
    "train.lr": [0.01],
    "evaluate.extra_attacks": [["eot_pgd"]],
    "evaluate.threats.corruptions": [[3]],
    "evaluate.threats.spatial": [{"rotate": 10, "translate": 1}],
    "train.threats.spatial": [{"rotate": 10, "translate": 1}],
    "evaluate.certify.bounds": [["crown"], ["ibp"]],
    "evaluate.certify.smoothing": [
        {"sigma": 0.25, "n0": 10, "n": 100, "alpha": 0.001, "radii": [1]}
    ],
    "registry.model_name": ["iocane-other"],
    "sweep.method": [["trades"]],
    "sweep.model": [["madry_cnn"]],
    "sweep.runner": ["dask"],
    "sweep.address": ["tcp://127.0.0.1:8786"],
}

# Keys that only apply beside others: both sides of the comparison get these too.
COMPANIONS: dict[str, dict[str, Any]] = {
    key: {"data.dataset": "folder", "data.root": "images"}
    for key in ("data.image_size", "data.channels", "data.on_bad_image", "data.on_small_image")
}
COMPANIONS["train.optimizer"] = {"train.lr": 0.01}  # a null lr has a default for sgd only
# A null train.lr is filled by where training starts (0.01 from model.weights): train is keyed
# on the filled value, which moves it too; with the lr given, model.weights is warmup's alone.
COMPANIONS["model.weights"] = {"train.lr": 0.05}
# A threshold per threat needs its threat in the profile (evaluate.threats).
for _threat in ("linf", "l2", "l0", "patch", "corruptions", "spatial"):
    COMPANIONS[f"gate.min_threat_accuracy.{_threat}"] = {
        f"evaluate.threats.{_threat}": CANDIDATES.get(f"evaluate.threats.{_threat}", [1])[0]
    }


def covers(declared: str, key: str) -> bool:
    """Whether a declared params entry (a key or a whole section) covers a dotted key."""
    return key == declared or key.startswith(f"{declared}.")


def declared_by(key: str) -> set[str]:
    return {
        stage
        for stage, spec in stage_specs().items()
        if any(covers(declared, key) for declared in spec.params)
    }


def exempt(key: str) -> bool:
    return any(covers(section, key) for section in NOT_STAGE_PARAMS)


def _set(document: dict, key: str, value: Any) -> None:
    *sections, name = key.split(".")
    node = document
    for section in sections:
        node = node[section]
    node[name] = value


def _get(document: dict, key: str) -> Any:
    node: Any = document
    for part in key.split("."):
        node = node[part]
    return node


def _literal_choices(key: str) -> list[Any]:
    """The other values of a ``Literal`` field (``train.optimizer``: sgd | adam | adamw)."""
    model: Any = Config
    *sections, name = key.split(".")
    for section in sections:
        model = model.model_fields[section].annotation
        # An optional section (``CertifyConfig | None``): its fields are the section's.
        model = next((arg for arg in typing.get_args(model) if arg is not type(None)), model)
    annotation = model.model_fields[name].annotation
    members = typing.get_args(annotation) if typing.get_origin(annotation) is not None else ()
    if typing.get_origin(annotation) is typing.Literal:
        members = (annotation,)  # not a union: the literal itself
    return [
        arg
        for member in members
        if typing.get_origin(member) is typing.Literal
        for arg in typing.get_args(member)
    ]


def candidates(key: str, value: Any) -> list[Any]:
    if key in CANDIDATES:
        return CANDIDATES[key]
    choices = [choice for choice in _literal_choices(key) if choice != value]
    if choices:
        return choices
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, 1]
    if isinstance(value, float):
        return [value / 2, min(value * 2, 1.0), 0.5]
    if isinstance(value, str):
        return [f"{value}-other"]
    if value is None:
        return [0.5, 1, True, "other"]
    if isinstance(value, (list, tuple)):
        return [[*value, 0.05], [*value, 2]]
    return []


def changed(document: dict, key: str) -> tuple[Config, Config]:
    """The config of ``document`` (with the key's companions) and the same with ``key``
    changed to the first candidate value that validates."""
    base = copy.deepcopy(document)
    for companion, value in COMPANIONS.get(key, {}).items():
        _set(base, companion, value)
    before = config_from_dict(base)
    # The value as validated: an optional key the file leaves out has its default there.
    for value in candidates(key, _get(before.to_dict(), key)):
        after = copy.deepcopy(base)
        _set(after, key, value)
        try:
            config = config_from_dict(after)
        except ConfigError:
            continue
        if _get(config.to_dict(), key) != _get(before.to_dict(), key):
            return before, config
    raise AssertionError(f"no changed value of {key} validates: add one to CANDIDATES")


@pytest.fixture
def project(tmp_path: Path) -> tuple[dict, Layout]:
    write_stage_files(tmp_path)
    layout = Layout(tmp_path)
    layout.prepared_meta.write_text('{"fingerprint": "abc"}')
    document = yaml.safe_load(write_tiny_params(tmp_path / "params.yaml").read_text())
    return document, layout


def test_every_params_key_is_declared_by_a_stage_or_exempt_with_a_reason(project) -> None:
    document, _ = project
    keys = leaf_keys(config_from_dict(document).to_dict())
    assert keys, "the params tree has keys"
    undeclared = [key for key in keys if not declared_by(key) and not exempt(key)]
    assert undeclared == [], f"in no stage's params (dvc.yaml) nor NOT_STAGE_PARAMS: {undeclared}"
    both = [key for key in keys if declared_by(key) and exempt(key)]
    assert both == [], f"declared by a stage and exempt at once: {both}"
    tree = config_from_dict(document).to_dict()
    for spec in stage_specs().values():
        for declared in spec.params:
            _get(tree, declared)  # a declared key or section that does not exist raises
    for section, reason in NOT_STAGE_PARAMS.items():
        assert isinstance(tree[section], dict) and len(reason) > 20, section


def test_changing_any_key_changes_exactly_the_stages_that_declare_it(project) -> None:
    """Each key of the params tree changed alone: the stages whose key changes are the ones
    whose params cover it, and the registered evidence changes unless the key is exempt."""
    document, layout = project
    wrong = {}
    keys = leaf_keys(config_from_dict(document).to_dict())
    for key in keys:
        before, after = changed(document, key)
        moved = {
            stage
            for stage in STAGES
            if stage_key(stage, before, layout) != stage_key(stage, after, layout)
        }
        if moved != declared_by(key):
            wrong[key] = (sorted(moved), sorted(declared_by(key)))
        if (evidence_key(before, layout) != evidence_key(after, layout)) == exempt(key):
            wrong[key] = "evidence key"
    assert wrong == {}, wrong
    # the three keys a hand-kept list once missed (issue 29)
    for key in ("warmup.optimizer", "train.optimizer", "train.budget_minutes"):
        assert key in keys and declared_by(key) >= {key.split(".")[0]}


def test_a_key_added_to_a_stages_section_is_in_its_cache_key_at_once(project) -> None:
    """The structure, not a list, keys a section: a new train key changes the train key
    without any edit of dvc.yaml (shown on the dumped values the key hashes)."""
    from iocane.pipeline.keys import stage_params

    document, _ = project
    config = config_from_dict(document)
    params = stage_params("train", config)
    assert params["train"] == config.train.to_dict()
    assert set(params) == set(stage_specs()["train"].params)


def test_the_checkpoint_run_keys_follow_the_same_lists(project) -> None:
    """A training checkpoint resumes only under the params its stage declares (less the keys
    that decide which files stay, ``NOT_IN_RUN_KEY``): every other key changed alone changes
    the params of the run key of warmup and train when, and only when, the stage declares it."""
    from iocane.training.checkpoints import NOT_IN_RUN_KEY, run_params

    document, _ = project
    wrong = {}
    for key in leaf_keys(config_from_dict(document).to_dict()):
        before, after = changed(document, key)
        for stage in ("warmup", "train"):
            moved = run_params(stage, before) != run_params(stage, after)
            expected = stage in declared_by(key) and key.rpartition(".")[2] not in NOT_IN_RUN_KEY
            if moved != expected:
                wrong[f"{stage}: {key}"] = moved
    assert wrong == {}, wrong
