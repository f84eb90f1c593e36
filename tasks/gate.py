"""The ``gate`` stage: judge ``metrics/evaluate.json`` against the thresholds in ``gate``."""

from __future__ import annotations

import logging

from iocane.base.config import Config
from iocane.base.files import read_json, write_json
from iocane.base.layout import Layout
from iocane.robustness.gate import check_gate, summary

log = logging.getLogger(__name__)


def run_gate(config: Config, layout: Layout) -> dict:
    """The ``gate`` stage: judge metrics/evaluate.json, write metrics/gate.json."""
    verdict = check_gate(config.gate, read_json(layout.metrics_file("evaluate")))
    write_json(layout.metrics_file("gate"), verdict)
    if verdict["passed"]:
        log.info("gate passed: %s", ", ".join(summary(check) for check in verdict["checks"]))
    else:
        log.warning("gate FAILED: %s", "; ".join(verdict["reasons"]))
    return verdict
