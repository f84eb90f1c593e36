"""The ``evaluate`` stage: the attack suite, the curves and the figures, for the hardened and the
natural model (``iocane.reports.evaluation.evaluate_and_report``).

``evaluate_robustness`` is re-exported here for the researchers' import path that DESIGN.md
promises (``from tasks.evaluate import evaluate_robustness``); ``iocane.evaluate_robustness`` is
the same function.
"""

from __future__ import annotations

from iocane.base.config import Config
from iocane.base.layout import Layout
from iocane.base.settings import resolve_device
from iocane.data.prepared import load_prepared
from iocane.model_files import load_model
from iocane.reports.evaluation import evaluate_and_report
from iocane.robustness.suite import evaluate_robustness

__all__ = ["evaluate_robustness", "run_evaluate"]


def run_evaluate(config: Config, layout: Layout) -> dict:
    """The ``evaluate`` stage: the suite, the curves and the example grid, for the hardened and
    the natural model."""
    device = resolve_device()
    hardened = load_model(layout.model_file("train"), device)[0]
    natural = load_model(layout.model_file("warmup"), device)[0]
    return evaluate_and_report(config, hardened, natural, load_prepared(layout), layout)
