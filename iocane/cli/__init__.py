"""The ``iocane`` command: run, sweep, evaluate, review, promote, serve, schema.

Exit codes: 0 success (gate passed), 3 gate failed or promotion refused, 2 bad input
(params, data, model files, model URIs, unknown options), 1 anything else.

``main(argv)`` runs a command line in process and returns its exit code; ``console_main`` is
the console script and ``python -m iocane.cli`` (``main`` on ``sys.argv``, in a process that is
iocane's alone); ``app`` is the typer application; ``cli_reference_markdown``
renders every command's usage, help and options as Markdown (the docs' CLI reference).
"""

import os

# Before Prefect is imported: no telemetry, and our progress lines reach the Prefect UI too.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "iocane")
# The temporary Prefect server gets 20 s to start by default: too little on a loaded laptop.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
# Against a tracking server MLflow prints "View run ... at" links on stdout when a run ends;
# stdout carries the commands' JSON result, so they are left out.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# `iocane evaluate` logs outside any flow run: no warning per line about the missing run.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

from iocane.cli.commands import app, console_main, main
from iocane.cli.reference import cli_reference_markdown

__all__ = ["app", "cli_reference_markdown", "console_main", "main"]
