"""Console progress for the ``iocane`` logger (per-epoch lines, per-attack lines)."""

from __future__ import annotations

import logging
import sys


def setup_console_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("iocane")
    if any(getattr(handler, "_iocane", False) for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler._iocane = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class _NoTracebackForExplainedErrors(logging.Filter):
    """Prefect logs a failed task or flow with its traceback. For an error whose message says
    everything (bad input, divergence, a stop by signal: ``iocane.base.errors.EXPLAINED_ERRORS``)
    the console shows the message alone, as the CLI does."""

    def filter(self, record: logging.LogRecord) -> bool:
        from iocane.base.errors import EXPLAINED_ERRORS

        if record.exc_info and isinstance(record.exc_info[1], EXPLAINED_ERRORS):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_explained_tracebacks() -> None:
    """Add the filter to Prefect's console handlers, configuring Prefect's logging first (it
    would otherwise happen at the first flow run, replacing nothing we add here)."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    names = [name for name in logging.root.manager.loggerDict if name.startswith("prefect")]
    for logger in (logging.root, *map(logging.getLogger, names)):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not any(
                isinstance(existing, _NoTracebackForExplainedErrors) for existing in handler.filters
            ):
                handler.addFilter(_NoTracebackForExplainedErrors())
