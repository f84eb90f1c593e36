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
