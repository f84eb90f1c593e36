"""MkDocs hook: figures that change with every run come from the benchmarks' JSON, not from prose.

A page writes ``{{ figure("flow_cache-digits-2026-11-21.json", "runs.0.seconds") }}`` and the
build puts the value from ``benchmarks/results/`` there; a third argument is a Python format
spec (``".1%"``, ``".2f"``). ``{{ result_table("capacity-digits-2026-11-22.md") }}`` inlines a
Markdown table a benchmark wrote. A missing file or key fails the build and names both, so a
page can never show a number that no benchmark produced. The files under ``benchmarks/results/``
are also published under ``results/`` in the site, so pages can show the benchmarks' figures
(``![...](../results/capacity-digits-2026-11-22.png)``).
"""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

RESULTS_DIR = Path("benchmarks", "results")
SITE_FOLDER = "results"  # where the results files land in the site
_CALL = re.compile(r"\{\{\s*(figure|result_table)\((.*?)\)\s*\}\}")


def _results(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).parent / RESULTS_DIR


@cache
def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PluginError(f"figures: no benchmark result {path}") from None
    except json.JSONDecodeError as error:
        raise PluginError(f"figures: {path} is not JSON: {error}") from None


def lookup(document: Any, key: str, source: str) -> Any:
    """The value at a dotted key; a numeric part indexes a list (``runs.0.seconds``)."""
    value = document
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise PluginError(f"figures: {source} has no key {key!r} (missing part {part!r})")
    if isinstance(value, dict | list):
        raise PluginError(f"figures: {source} key {key!r} is not a single figure")
    return value


def render(value: Any, spec: str | None) -> str:
    """A figure as text: the format spec when given; else floats to 3 decimals, no trailing 0s."""
    if spec is not None:
        return format(value, spec)
    if isinstance(value, float):
        return f"{round(value, 3):g}"
    return str(value)


def _arguments(text: str, where: str) -> list[Any]:
    try:
        parsed = ast.literal_eval(f"({text},)")
    except (ValueError, SyntaxError):
        raise PluginError(f"figures: {where}: cannot read the arguments ({text})") from None
    return list(parsed)


def expand(markdown: str, results: Path, where: str) -> str:
    """Every ``{{ figure(...) }}`` and ``{{ result_table(...) }}`` in ``markdown`` replaced."""

    def replace(match: re.Match[str]) -> str:
        name, arguments = match.group(1), _arguments(match.group(2), where)
        if name == "result_table":
            path = results / arguments[0]
            if not path.is_file():
                raise PluginError(f"figures: {where}: no benchmark result {path}")
            return path.read_text().strip()
        if len(arguments) not in (2, 3):
            raise PluginError(f"figures: {where}: figure(file, key[, format]), got {arguments}")
        path = results / arguments[0]
        if not path.is_file():
            raise PluginError(f"figures: {where}: no benchmark result {path}")
        value = lookup(_load(path), arguments[1], f"{where}: {path}")
        return render(value, arguments[2] if len(arguments) == 3 else None)

    return _CALL.sub(replace, markdown)


def on_pre_build(config: MkDocsConfig) -> None:
    _load.cache_clear()  # `mkdocs serve` rebuilds in one process: read the results afresh


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return expand(markdown, _results(config), page.file.src_uri)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path in sorted(_results(config).iterdir()):
        if path.is_file() and path.suffix != ".md":  # tables are inlined, not pages of their own
            files.append(
                File.generated(config, f"{SITE_FOLDER}/{path.name}", abs_src_path=str(path))
            )
    return files
