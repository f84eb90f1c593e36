"""MkDocs hook: the page ``reference/cli.md``, generated at build time from the commands themselves.

With the typer CLI, ``iocane.cli.cli_reference_markdown()`` renders every command's usage, help
and options; with the argparse CLI, this hook renders ``iocane.cli.build_parser()``'s top-level
help and each subcommand's ``--help``. Either way the page is the code's own description, so it
cannot drift from it. The exit codes come from ``iocane.errors``. An import error fails the
build with its message.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

PAGE = "reference/cli.md"
WIDTH = "88"  # argparse wraps help to $COLUMNS: fixed, so the page is the same everywhere and fits

TITLE = "# Command line reference"
INTRO = """Generated at build time from the `iocane` command itself (`iocane.cli`), so it shows the
options of the code it was built from. `iocane COMMAND --help` prints the same text.
"""


def _import_cli(project_root: Path):
    if str(project_root) not in sys.path:
        sys.path.insert(0, str(project_root))
    try:
        import iocane.cli as cli
        import iocane.errors as errors
    except Exception as error:  # any import failure: the page cannot be generated
        raise PluginError(f"cli_reference: cannot import iocane.cli: {error!r}") from error
    return cli, errors


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order they were added."""
    for action in parser._actions:  # argparse has no public accessor for its subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def argparse_markdown(parser: argparse.ArgumentParser) -> str:
    """The top-level help, then a section per subcommand with its help line and ``--help``."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        sections = ["## iocane", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, summary, sub in _subcommands(parser):
            sections += [f"## iocane {name}", "", f"{summary[:1].upper()}{summary[1:]}.", ""]
            sections += ["```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(sections)


def exit_codes_markdown(errors) -> str:
    """The exit-code table, from the constants in ``iocane.errors``."""
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
    """The page: the CLI's own reference when it renders one (its title kept, or ours), else the
    argparse help; then the exit codes, which other pages link to (``#exit-codes``)."""
    cli, errors = _import_cli(project_root)
    if hasattr(cli, "cli_reference_markdown"):
        page = cli.cli_reference_markdown().strip()
        if not page.startswith("# "):
            page = f"{TITLE}\n\n{page}"
    else:
        page = f"{TITLE}\n\n{INTRO}\n{argparse_markdown(cli.build_parser()).strip()}"
    if "\n## Exit codes\n" not in f"\n{page}\n":
        page = f"{page}\n\n{exit_codes_markdown(errors)}"
    return page.rstrip() + "\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = Path(config.config_file_path).parent
    files.append(File.generated(config, PAGE, content=cli_page(root)))
    return files
