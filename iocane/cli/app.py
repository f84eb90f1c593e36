"""The ``iocane`` typer application and what every command shares: the examples epilog, the guard
that maps any error to its exit code with a one-line message, and the parameters a flow is
called with. The commands themselves are ``iocane.cli.commands``'."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from iocane.base.errors import exit_code_for, report_error
from iocane.base.interrupts import stop_on_signals
from iocane.base.logs import setup_console_logging

app = typer.Typer(
    name="iocane",
    help=(
        "Harden an image classifier against adversarial examples, evaluate it, gate it and "
        "register it.\n\nExit codes: 0 success (gate passed), 3 gate failed or promotion "
        "refused, 2 bad input (params, data, model files, model URIs, unknown options), 1 "
        "anything else."
    ),
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def examples(*lines: str) -> str:
    """A command's epilog: its examples, one command line each (also in the CLI reference)."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def guarded(command: Callable[..., int]) -> Callable[..., int]:
    """Run a command with console logging and safe stop on signals; map any error to its exit
    code with a one-line message. A non-zero code leaves as ``typer.Exit`` so that ``app()``
    exits with it too, not only ``main``."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> int:
        setup_console_logging()
        try:
            with stop_on_signals():
                code = command(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            code = 130
        except typer.TyperException:  # a usage error: main() prints it as one line
            raise
        except Exception as error:  # mapped to a documented exit code with a one-line message
            report_error(error)
            code = exit_code_for(error)
        if code:
            raise typer.Exit(code)
        return 0

    # Typer keeps a docstring's line breaks: one line per paragraph, wrapped to the terminal.
    wrapper.__doc__ = "\n\n".join(
        " ".join(paragraph.split()) for paragraph in inspect.cleandoc(command.__doc__).split("\n\n")
    )
    return wrapper


def flow_parameters(params: str, overrides: list[str]) -> dict[str, object]:
    """The parameters a flow is called with: the params file's absolute path, the overrides,
    and the current directory as the project root."""
    return {
        "params_path": str(Path(params).resolve()),
        "overrides": list(overrides),
        "project_root": str(Path.cwd()),
    }
