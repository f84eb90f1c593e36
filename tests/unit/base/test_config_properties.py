"""Property-based: the params loader, fed random documents, either returns a valid config or
raises ConfigError (the one documented error type, which the CLI turns into exit 2)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iocane.base.config import Config, ConfigError, load_config
from tests.helpers.paths import PROJECT_ROOT

VALID = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(scalars, inner, max_size=3),
    max_leaves=8,
)
KEYS = [(section, key) for section, body in VALID.items() if isinstance(body, dict) for key in body]


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict:
    """The project's params with a few keys replaced, deleted or added: near-valid documents,
    where the checks between keys are exercised."""
    document = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        section, key = draw(st.sampled_from(KEYS))
        if not isinstance(document[section], dict):
            continue  # replaced by an earlier action
        action = draw(st.sampled_from(["replace", "delete", "add", "section"]))
        if action == "replace":
            document[section][key] = draw(values)
        elif action == "delete":
            document[section].pop(key, None)
        elif action == "add":
            document[section][draw(scalars)] = draw(values)
        else:
            document[section] = draw(values)
    return document


def _load(tmp_path: Path, text: str, overrides: list[str]) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    try:
        config = load_config(path, overrides)
    except ConfigError:
        return
    assert isinstance(config, Config)
    for section in config.to_dict().values():
        for value in section.values() if isinstance(section, dict) else [section]:
            if isinstance(value, float):
                assert math.isfinite(value), f"a non-finite number was accepted: {config}"


common = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@common
@given(document=mutated_documents())
def test_near_valid_documents(tmp_path: Path, document: dict) -> None:
    _load(tmp_path, yaml.safe_dump(document), [])


@common
@given(document=values)
def test_arbitrary_documents(tmp_path: Path, document: object) -> None:
    _load(tmp_path, yaml.safe_dump(document), [])


@common
@given(text=st.text(max_size=200))
def test_arbitrary_text(tmp_path: Path, text: str) -> None:
    _load(tmp_path, text, [])


@common
@given(overrides=st.lists(st.text(max_size=30), max_size=3))
def test_arbitrary_overrides(tmp_path: Path, overrides: list[str]) -> None:
    _load(tmp_path, yaml.safe_dump(VALID), overrides)
