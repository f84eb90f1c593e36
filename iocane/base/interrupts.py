"""SIGINT and SIGTERM: stop at a safe point when one is near, at once otherwise.

The entry points (``iocane`` and ``python -m iocane.stages``) install ``stop_on_signals``: a
signal raises ``Interrupted`` where the program is, and the ``finally`` blocks and the flow mark
what was running as killed. Training wraps its loop in ``safe_stop_section``: there a signal only
records a request, the loop finishes its step, saves a checkpoint of exactly that point and
raises ``Interrupted``, so a rerun resumes at the step after it. A second signal stops at once.

Prefect swaps in its own SIGTERM handler while a flow runs; ``safe_stop_section`` puts this one
back for the training loop and restores Prefect's afterwards, and Prefect's handler re-sends
the signal to the handler it replaced, which is ``stop_on_signals``'.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("iocane")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The run was stopped by a signal; the message says what was saved."""

    def __init__(self, signal_name: str, message: str = "") -> None:
        self.signal_name = signal_name
        super().__init__(message or f"stopped by {signal_name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process a signal ended."""
        return 128 + int(signal.Signals[self.signal_name])


_section_depth = 0
_requested: str | None = None


def _handle(signum: int, frame: FrameType | None) -> None:
    global _requested
    name = signal.Signals(signum).name
    if _section_depth and _requested is None:
        _requested = name
        log.warning(
            "%s received: stopping after the current step, once its checkpoint is saved "
            "(send it again to stop at once)",
            name,
        )
        return
    raise Interrupted(name)


def stop_requested() -> str | None:
    """The signal that asked a safe-stop section to stop, if one did."""
    return _requested


def _install() -> dict[int, object] | None:
    """Our handler for both signals; the previous ones, or None off the main thread."""
    try:
        return {number: signal.signal(number, _handle) for number in STOP_SIGNALS}
    except ValueError:  # signals can only be handled in the main thread
        return None


def _restore(previous: dict[int, object] | None) -> None:
    for number, handler in (previous or {}).items():
        signal.signal(number, handler)  # type: ignore[arg-type]


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """For an entry point: SIGINT and SIGTERM raise ``Interrupted`` instead of ending the
    process where it stands."""
    previous = _install()
    try:
        yield
    finally:
        _restore(previous)


@contextmanager
def safe_stop_section() -> Iterator[None]:
    """Within the block a signal is a request (``stop_requested``) that the block honours at
    its next safe point; outside it the entry point's handler applies again."""
    global _section_depth, _requested
    previous = _install()
    _section_depth += 1
    try:
        yield
        pending = _requested  # a request the block did not reach a safe point for
    finally:
        _section_depth -= 1
        if _section_depth == 0:
            _requested = None
        _restore(previous)
    if pending is not None:
        raise Interrupted(pending)
