"""DESIGN.md's import paths for researchers: ``from iocane import evaluate_robustness`` and
``from tasks.evaluate import evaluate_robustness`` are one function, and importing the package
does not load torch (the CLI rejects bad params before torch loads)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_both_import_paths_give_the_same_function() -> None:
    from iocane import evaluate_robustness
    from iocane.robustness.suite import evaluate_robustness as in_the_suite
    from tasks.evaluate import evaluate_robustness as from_the_stage

    assert evaluate_robustness is from_the_stage is in_the_suite


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    import iocane

    with pytest.raises(AttributeError, match="no attribute 'evaluate_robustnes'"):
        _ = iocane.evaluate_robustnes


@pytest.mark.parametrize("module", ["iocane", "iocane.cli"])
def test_importing_the_package_does_not_import_torch(module: str) -> None:
    code = f"import {module}, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
