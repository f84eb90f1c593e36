"""The params tree as code uses it: immutable, copied with checks, loaded without torch."""

from __future__ import annotations

import subprocess
import sys

import pydantic
import pytest

from iocane.base.config import ConfigError, config_from_dict, replace


def test_the_tree_is_frozen(params_document: dict) -> None:
    config = config_from_dict(params_document)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.train.eps = 0.3  # type: ignore[misc]


def test_replace_copies_and_checks_again(params_document: dict) -> None:
    config = config_from_dict(params_document)
    point = replace(config, seed=7, train=replace(config.train, eps=0.3, method="trades"))
    assert (point.seed, point.train.eps, point.train.method) == (7, 0.3, "trades")
    assert (config.seed, config.train.eps) == (0, 0.1), "the original is unchanged"
    with pytest.raises(ConfigError, match="eps"):
        replace(config.train, eps=2.0)  # a Linf eps above 1
    with pytest.raises(ConfigError, match="unknown key epsilon"):
        replace(config.train, epsilon=0.3)


def test_to_dict_is_the_document(params_document: dict) -> None:
    tree = config_from_dict(params_document).to_dict()
    assert tree["train"]["eps"] == params_document["train"]["eps"]
    assert tree["evaluate"]["extra_attacks"] == ()
    assert list(tree) == list(params_document), "sections in the file's order"


def test_the_config_loads_without_torch() -> None:
    """Bad params must exit before torch is imported (a second, not ten)."""
    code = "import sys, iocane.base.config, iocane.base.errors; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
