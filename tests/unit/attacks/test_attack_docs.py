"""The evaluation page's attack table is generated from the registry: the page asks for it, the
docs build runs the hook, and the table has a row for every registered attack."""

from __future__ import annotations

import importlib.util

from attacks import registry
from tests.helpers.paths import PROJECT_ROOT

PAGE = PROJECT_ROOT / "docs" / "evaluation" / "index.md"


def _hook():
    spec = importlib.util.spec_from_file_location(
        "attack_table_hook", PROJECT_ROOT / "docs" / "hooks" / "attack_table.py"
    )
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_the_docs_build_fills_the_evaluation_page_from_the_registry() -> None:
    assert "docs/hooks/attack_table.py" in (PROJECT_ROOT / "mkdocs.yml").read_text()
    page = PAGE.read_text()
    assert "{{ attack_table() }}" in page and "{{ preset_table() }}" in page
    built = _hook().expand(page, registry)
    assert "{{" not in built.split("## The attack suite")[1].split("## Adaptive attacks")[0]
    rows = [line for line in built.splitlines() if line.startswith("| `")]
    for entry in registry.entries():
        row = next((line for line in rows if line.startswith(f"| `{entry.name}` |")), None)
        assert row is not None, f"{entry.name} has no row in the evaluation page's table"
        assert entry.description in row and entry.kind in row
    for preset in registry.PRESETS_TABLE:
        assert any(line.startswith(f"| `{preset.name}` | {preset.purpose} |") for line in rows)
