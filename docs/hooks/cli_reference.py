"""MkDocs hook: the page ``reference/cli.md``, generated at build time from the commands themselves.

``iocane.cli.cli_reference_markdown()`` walks the typer application and renders every command's
usage, help, options and examples, so the page is the code's own description and cannot drift
from it. This hook adds the exit-code table, from the constants in ``iocane.base.errors``, which
other pages link to (``reference/cli.md#exit-codes``). An import error fails the build
with its message.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

PAGE = "reference/cli.md"
TITLE = "# Command line reference"


def _import_cli(project_root: Path):
    if str(project_root) not in sys.path:
        sys.path.insert(0, str(project_root))
    try:
        import iocane.base.errors as errors
        from iocane.cli import cli_reference_markdown
    except Exception as error:  # any import failure: the page cannot be generated
        raise PluginError(f"cli_reference: cannot import iocane.cli: {error!r}") from error
    return cli_reference_markdown, errors


def exit_codes_markdown(errors) -> str:
    """The exit-code table, from the constants in ``iocane.base.errors``."""
    rows = [
        (0, "success: the gate passed, or the command did what it was asked"),
        (errors.GATE_FAILED, "the gate failed, or a promotion or rollback was refused"),
        (errors.BAD_INPUT, "bad input: params, data, model files, model URIs, a cron expression"),
        (errors.OTHER_ERROR, "anything else (a bug or an environment problem; with a traceback)"),
        ("128 + N", "stopped by signal N: 130 for SIGINT (Ctrl-C), 143 for SIGTERM; resumable"),
    ]
    lines = ["## Exit codes", "", "| code | meaning |", "|---|---|"]
    lines += [f"| {code} | {meaning} |" for code, meaning in rows]
    return "\n".join(lines) + "\n"


def cli_page(project_root: Path) -> str:
    """The CLI's own reference (its title kept, or ours), then the exit codes."""
    cli_reference_markdown, errors = _import_cli(project_root)
    page = cli_reference_markdown().strip()
    if not page.startswith("# "):
        page = f"{TITLE}\n\n{page}"
    if "\n## Exit codes\n" not in f"\n{page}\n":
        page = f"{page}\n\n{exit_codes_markdown(errors)}"
    return page.rstrip() + "\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = Path(config.config_file_path).parent
    files.append(File.generated(config, PAGE, content=cli_page(root)))
    return files
