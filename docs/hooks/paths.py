"""MkDocs hook: every project path the docs and the README name must exist in the tree.

A code span that starts with one of the project's source folders (``iocane/training/loop.py``,
``tests/e2e/test_dvc.py``) or names a top-level project file (``params.yaml``) is checked
against the checkout, and so is a project module a command runs with ``-m``
(``python -m iocane.stages``); so are the README's links into ``docs/``. Outputs of a run
(``metrics/``, ``checkpoints/``, ``plots/``, ...) are not in the tree and are not checked.
A path that does not exist fails the build and is named with its page, so a move in the code
cannot leave the docs pointing at the old place.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

SOURCE_FOLDERS = (
    "iocane/",
    "tasks/",
    "flows/",
    "attacks/",
    "models/",
    "tests/",
    "benchmarks/",
    "configs/",
    "docs/",
    ".ci/",
)
PROJECT_FILES = {
    "params.yaml",
    "dvc.yaml",
    "prefect.yaml",
    "pyproject.toml",
    "constraints.txt",
    "mkdocs.yml",
    ".pre-commit-config.yaml",
}
PACKAGES = ("iocane", "tasks", "flows", "attacks", "models", "benchmarks")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_RUN_MODULE = re.compile(r"-m\s+([A-Za-z_][\w.]*)")  # python -m iocane.stages, torchrun ... -m
_README_LINK = re.compile(r"\]\((docs/[^)#\s]+)")


def project_paths(markdown: str) -> list[str]:
    """The project paths a Markdown text names in its code spans."""
    found = []
    for span in _CODE_SPAN.findall(markdown):
        for word in span.split():
            word = word.split(":", 1)[0].rstrip(".,;)")  # flows/harden.py:harden, a path.
            if any(mark in word for mark in "<>{}*$="):  # a pattern, not a path
                continue
            if word.startswith(SOURCE_FOLDERS) or word in PROJECT_FILES:
                found.append(word)
    return found


def run_modules(markdown: str) -> list[str]:
    """The project modules a Markdown text runs with ``-m`` (``python -m iocane.stages``)."""
    return [
        module
        for span in _CODE_SPAN.findall(markdown)
        for module in _RUN_MODULE.findall(span)
        if module.split(".")[0] in PACKAGES
    ]


def _module_exists(module: str, root: Path) -> bool:
    base = root.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()


def missing(markdown: str, root: Path) -> list[str]:
    absent = {path for path in project_paths(markdown) if not (root / path).exists()}
    absent |= {f"-m {name}" for name in run_modules(markdown) if not _module_exists(name, root)}
    return sorted(absent)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    absent = missing(markdown, Path(config.config_file_path).parent)
    if absent:
        raise PluginError(f"paths: {page.file.src_uri} names paths that do not exist: {absent}")
    return markdown


def on_post_build(config: MkDocsConfig) -> None:
    root = Path(config.config_file_path).parent
    readme = (root / "README.md").read_text()
    absent = missing(readme, root)
    absent += [link for link in _README_LINK.findall(readme) if not (root / link).exists()]
    if absent:
        raise PluginError(f"paths: README.md names paths that do not exist: {sorted(absent)}")
