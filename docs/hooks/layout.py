"""MkDocs hook: the page ``reference/layout.md``, the project's modules with what each is for.

Generated at build time from the tree itself: every Python module under the project's code
folders, with the first sentence of its docstring. A module that moves or appears shows up on
the next build, so the page cannot describe a layout the code no longer has.
"""

from __future__ import annotations

import ast
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PAGE = "reference/layout.md"
# (folder, what it holds): the top level of the project, in the order of its layers.
FOLDERS = (
    ("iocane", "the installed package: CLI, stage entry points, engine areas, base modules"),
    ("tasks", "one thin module per pipeline stage, and tasks/prefect_tasks.py with every task"),
    ("flows", "Prefect flows: straight-line wiring only"),
    ("attacks", "one attack per module behind one call shape; threat models; presets"),
    ("models", "one architecture per module; normalisation inside the model"),
    ("benchmarks", "measurements that print JSON (recorded runs in benchmarks/results/)"),
)

INTRO = """# Project layout

Generated at build time from the modules' own docstrings. Layers, top to bottom (an
import-linter contract in `pyproject.toml` states them, and `.ci/run` checks it): the CLI and the
stage entry points, then `flows/`, then `tasks/`, then the engine areas of `iocane/`, then
`attacks/` and `models/`, then the base modules of `iocane/`.

Beside the code: `params.yaml` (the defaults) and `params.schema.json` (its JSON schema,
generated), `configs/` (overlays for other datasets: only the keys that differ from
`params.yaml`), `dvc.yaml` (the stages, their deps, params and outputs: the one list the cache
keys read too), `prefect.yaml` (deployments), `tests/` (`unit/<area>/`, `e2e/`, `faults/`,
`helpers/`) and `docs/` (this site).
"""


def first_sentence(path: Path) -> str:
    try:
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    except SyntaxError:
        return ""
    paragraph = " ".join(docstring.split("\n\n")[0].split())
    return paragraph.replace("|", "\\|")


def layout_page(root: Path) -> str:
    lines = [INTRO]
    for folder, purpose in FOLDERS:
        lines += [f"## `{folder}/`", "", f"{purpose[:1].upper()}{purpose[1:]}.", ""]
        lines += ["| module | what it is for |", "|---|---|"]
        for path in sorted((root / folder).rglob("*.py")):
            purpose = first_sentence(path)
            if "__pycache__" in path.parts or (path.name == "__init__.py" and not purpose):
                continue  # an empty package marker says nothing
            lines.append(f"| `{path.relative_to(root).as_posix()}` | {purpose} |")
        lines.append("")
    return "\n".join(lines)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = Path(config.config_file_path).parent
    files.append(File.generated(config, PAGE, content=layout_page(root)))
    return files
