"""Evaluate a hardened model beside its natural baseline and write what people read: the metrics,
the report, the curves and the figures.

``evaluate_and_report`` is the one entry point for the evaluate stage (``tasks.evaluate``) and
for re-evaluating a registered version (``iocane evaluate``): ``iocane.robustness.evaluation``
computes, this module writes. It sits in ``iocane.reports`` so that the registry, above it, can
call it too.
"""

from __future__ import annotations

import contextlib
import time

from torch import nn

from iocane.base.config import Config
from iocane.base.files import write_json, write_text
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData
from iocane.reports.figures import (
    plot_alignment,
    plot_curves,
    plot_examples,
    plot_threat_profile,
)
from iocane.reports.report import render_report
from iocane.reports.threats import threat_bars
from iocane.robustness.evaluation import evaluate_models, metrics_from
from iocane.training.passes import counting_passes


def evaluate_and_report(
    config: Config,
    hardened: nn.Module,
    natural: nn.Module | None,
    data: PreparedData,
    out: Layout,
    labels: dict[str, str] | None = None,
) -> dict:
    """Evaluate a hardened model beside its natural baseline on ``data``'s test split, at
    ``config.train``'s threat model, and write metrics, report, curves and examples under
    ``out``. Used by the evaluate stage and by ``iocane evaluate`` on a registered version or
    on any model, where ``natural`` may be ``None`` (no baseline) and ``labels`` names the two
    models in the report and the figures (``{"hardened": "evaluated", "natural": "baseline"}``).
    The metrics include what the evaluation cost: its wall time and the passes through the
    models."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        counts = [stack.enter_context(counting_passes(hardened, "hardened"))]
        if natural is not None:
            counts.append(stack.enter_context(counting_passes(natural, "natural")))
        evaluated = evaluate_models(config, hardened, natural, data)
        if labels:
            evaluated.evaluation["labels"] = labels
        class_names = data.meta["class_names"]
        write_json(out.curves_file, evaluated.curves)
        plot_curves(evaluated.curves, evaluated.reference_eps, out.curves_plot, labels)
        plot_examples(evaluated.examples, class_names, out.examples_plot)
        plot_alignment(evaluated.alignment, class_names, out.alignment_plot, labels)
        plot_threat_profile(threat_bars(evaluated.evaluation), out.threat_plot, labels)
    metrics = metrics_from(evaluated.evaluation)
    metrics["seconds"] = time.perf_counter() - started
    for count in counts:  # the totals add up, the sections are apart
        for key, value in count.totals().items():
            metrics[key] = metrics.get(key, 0) + int(value)
    write_json(out.metrics_file("evaluate"), metrics)
    write_text(out.report_file, render_report(evaluated.evaluation))
    return metrics
