"""MkDocs hook: the attack table of the evaluation page, generated from the attack registry.

A page writes ``{{ attack_table() }}`` and the build puts there one row per entry of
``attacks.registry.ATTACKS``, in the order the suites run them: its name, kind, norms, its budget
in each preset, and its one-line description; ``{{ preset_table() }}`` gives the presets' purposes
and curve budgets. So an attack added to the registry is documented by the same line that adds
it, and the page cannot list an attack the suites do not run. An import error fails the build.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

_CALL = re.compile(r"\{\{\s*(attack_table|preset_table)\(\)\s*\}\}")


def _registry(project_root: Path):
    if str(project_root) not in sys.path:
        sys.path.insert(0, str(project_root))
    try:
        from attacks import registry
    except Exception as error:  # any import failure: the table cannot be generated
        raise PluginError(f"attack_table: cannot import attacks.registry: {error!r}") from error
    return registry


def _budget_text(budget) -> str:
    """``steps 100, n_target_classes 3``; "yes" for an attack that takes no budget."""
    return ", ".join(f"{key} {value}" for key, value in budget.items()) or "yes"


def attack_table_markdown(registry) -> str:
    """One row per registered attack: where it runs and at what budget."""
    presets = registry.PRESETS
    header = ["attack", "kind", "norms", *(f"`{name}`" for name in presets), "what it is"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in registry.entries():
        budgets = [
            _budget_text(entry.budgets[name]) if name in entry.budgets else "-" for name in presets
        ]
        kind = entry.kind + (", from the natural model" if entry.needs_surrogate else "")
        if entry.kind == "adaptive":
            kind += ": when the checks call for it, or asked for"
        cells = [f"`{entry.name}`", kind, ", ".join(entry.norms), *budgets, entry.description]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def preset_table_markdown(registry) -> str:
    """One row per preset: what it is for, and its accuracy-vs-eps curves' budget."""
    lines = ["| preset | for | curves: images, APGD-CE steps per eps |", "|---|---|---|"]
    lines += [
        f"| `{preset.name}` | {preset.purpose} | {preset.curve_images}, {preset.curve_steps} |"
        for preset in registry.PRESETS_TABLE
    ]
    return "\n".join(lines) + "\n"


def expand(markdown: str, registry) -> str:
    """``markdown`` with each ``{{ attack_table() }}`` and ``{{ preset_table() }}`` filled in."""
    tables = {"attack_table": attack_table_markdown, "preset_table": preset_table_markdown}
    return _CALL.sub(lambda call: tables[call.group(1)](registry), markdown)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if not _CALL.search(markdown):
        return markdown
    return expand(markdown, _registry(Path(config.config_file_path).parent))
