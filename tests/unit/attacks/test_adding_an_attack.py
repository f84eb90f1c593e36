"""The docs' worked example of adding an attack (docs/development.md, "Adding an attack"), run as
written: its module and its registry entry, with the table patched inside the test only. The
attack runs in the presets its entry names, and the property checks and the docs' attack table
pick it up, without any other list being edited."""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
import types

import pytest

from attacks import registry
from attacks.suites import build_suite
from iocane import evaluate_robustness
from tests.helpers.attack_properties import check_properties, registered_cases
from tests.helpers.paths import PROJECT_ROOT


def _docs_block(name: str) -> str:
    """The code of the fenced block marked ``<!-- docs-test: name -->`` in docs/development.md."""
    marked = re.compile(
        rf"^<!-- docs-test: {re.escape(name)} -->\n```\w*\n(.*?)^```$", re.DOTALL | re.MULTILINE
    )
    found = marked.findall((PROJECT_ROOT / "docs" / "development.md").read_text())
    assert len(found) == 1, f"docs/development.md has {len(found)} blocks marked {name!r}"
    return found[0]


@pytest.fixture
def bim_registered(monkeypatch) -> registry.AttackEntry:
    """The docs' module as ``attacks.bim`` and its entry at the end of ``ATTACKS``."""
    module = types.ModuleType("attacks.bim")
    monkeypatch.setitem(sys.modules, "attacks.bim", module)  # dataclasses look the module up
    exec(compile(_docs_block("attack-module"), "attacks/bim.py", "exec"), module.__dict__)
    lines = _docs_block("attack-entry").splitlines()
    imports = [line for line in lines if line.startswith(("from ", "import "))]
    entry_code = textwrap.dedent("\n".join(line for line in lines if line not in imports))
    namespace = dict(vars(registry))  # the entry is written inside attacks/registry.py
    exec("\n".join(imports), namespace)
    entry = eval(entry_code.strip().rstrip(","), namespace)
    monkeypatch.setattr(registry, "ATTACKS", (*registry.ATTACKS, entry))
    return entry


def test_the_new_attack_runs_in_the_presets_its_entry_names(bim_registered) -> None:
    assert "bim" not in build_suite("quick", "Linf", 0.1)
    for preset, steps in (("standard", 20), ("thorough", 50)):
        suite = build_suite(preset, "L2", 0.5)
        assert list(suite)[-1] == "bim"  # last in the table, last in the suite
        assert (suite["bim"].steps, suite["bim"].norm, suite["bim"].eps) == (steps, "L2", 0.5)


def test_the_new_attack_counts_in_the_evaluation(
    bim_registered, monkeypatch, trained_digits_model
) -> None:
    model, images, labels = trained_digits_model
    # The standard preset with only its two cheapest attacks beside it, to keep the test fast.
    cheap = tuple(registry.entry(name) for name in ("fgsm", "pgd_short"))
    monkeypatch.setattr(registry, "ATTACKS", (*cheap, bim_registered))
    result = evaluate_robustness(model, images[:32], labels[:32], eps=0.1, preset="standard")
    assert list(result.per_attack) == ["fgsm", "pgd_short", "bim"]
    assert result.robust_accuracy <= result.per_attack["bim"] < result.clean_accuracy


def test_the_property_checks_pick_up_the_new_attack(bim_registered, trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    cases = [case.values for case in registered_cases() if case.values[0] is bim_registered]
    assert [norm for _, norm in cases] == ["Linf", "L2"]
    for entry, norm in cases:
        check_properties(entry, norm, model, images[:32], labels[:32])


def test_the_docs_table_lists_the_new_attack(bim_registered) -> None:
    spec = importlib.util.spec_from_file_location(
        "attack_table_hook", PROJECT_ROOT / "docs" / "hooks" / "attack_table.py"
    )
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    table = hook.attack_table_markdown(registry)
    assert "| `bim` | white-box | Linf, L2 | - | steps 20 | steps 50 | BIM: iterative" in table
