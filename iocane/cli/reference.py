"""The CLI reference as Markdown, generated from the commands themselves.

Walks the typer application's command tree (as click sees it) and renders each command's usage,
help, options and examples, so the reference cannot drift from the code. The MkDocs site calls
``cli_reference_markdown`` from a hook to write its CLI reference page.
"""

from __future__ import annotations

import typer

from iocane.cli.commands import app  # with every command registered on it


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _option_row(param, context) -> str:
    names = ", ".join(f"`{name}`" for name in [*param.opts, *param.secondary_opts])
    flag = getattr(param, "is_flag", False)
    value = "" if flag else f"`{param.metavar or 'TEXT'}`"
    default = param.default
    shown = "" if flag or default in (None, (), []) else f"`{default}`"
    if param.required:
        shown = "required"
    return f"| {names} | {value} | {_cell(shown)} | {_cell(param.help or '')} |"


def _command_section(name: str, command, parent) -> list[str]:
    context = command.make_context(name, [], parent=parent, resilient_parsing=True)
    summary, _, details = (command.help or "").partition("\n\n")
    usage = " ".join([context.command_path, *command.collect_usage_pieces(context)])
    lines = [f"## `{context.command_path}`", "", summary, ""]
    if details:
        lines += [details, ""]
    lines += ["```text", usage, "```", ""]
    lines += ["| Option | Value | Default | Description |", "| --- | --- | --- | --- |"]
    lines += [_option_row(param, context) for param in command.get_params(context)]
    lines.append("")
    if command.epilog:
        examples = [line.strip() for line in command.epilog.splitlines() if line.startswith("  ")]
        lines += ["Examples:", "", "```bash", *examples, "```", ""]
    return lines


def cli_reference_markdown() -> str:
    """Every command of ``iocane``: usage, help, options (value, default, description) and
    examples, as one Markdown page."""
    group = typer.main.get_command(app)
    root = group.make_context("iocane", [], resilient_parsing=True)
    lines = [
        "# CLI reference",
        "",
        "Generated from the commands themselves (`iocane.cli.cli_reference_markdown`); "
        "`iocane COMMAND --help` prints the same.",
        "",
        *(group.help or "").split("\n\n")[1:],
        "",
    ]
    for name in group.list_commands(root):
        lines += _command_section(name, group.get_command(root, name), root)
    return "\n".join(lines).rstrip() + "\n"
