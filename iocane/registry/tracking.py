"""What a hardening run leaves in MLflow tracking: where the tracking store is, which code ran,
and the run's whole evidence (params, per-epoch and final metrics, costs, files).

One MLflow run per hardening run, its figures under clear stage prefixes (``warmup/``,
``train/``, ``natural/``, ``robust_accuracy/``) rather than nested runs per stage: one place
for a reviewer to read everything, one run id to link from the version, and the same run whether
the pipeline ran as a Prefect flow or as ``dvc repro`` (where each stage is its own process).
"""

from __future__ import annotations

import csv
import logging
import math
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

from iocane.base.config import Config
from iocane.base.errors import RegistryUnreachable
from iocane.base.layout import Layout
from iocane.base.settings import tracking_uri as tracking_uri  # its callers import it from here
from iocane.model_files import log_version_model_files
from iocane.pipeline.retries import is_transient
from iocane.reports.certified import certified_metrics
from iocane.reports.costs import cost_summary

log = logging.getLogger("iocane")

SKIPPED_TAG = "iocane.skipped_metrics"  # the metrics left out for having no finite value


def git_commit(root: Path) -> str:
    """The commit the code ran from, marked ``-dirty`` when the work tree had changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """A nested dict as one level of dotted keys (``{"train": {"eps": 0.1}}`` ->
    ``{"train.eps": 0.1}``), as MLflow params are named."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open() as stream:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(stream)
        ]


def run_name(config: Config) -> str:
    """The MLflow run name of a hardening run, e.g. ``harden-Linf-eps0.1``."""
    return f"harden-{config.train.norm}-eps{config.train.eps:g}"


def evaluation_metrics(evaluation: dict, verdict: dict) -> dict[str, float | None]:
    """The final figures a run logs: worst case, per attack, natural baseline, gate, the threat
    profile, the certified band (``certified_accuracy``: proven, beside the attacked
    ``robust_accuracy``), and C&W's distance."""
    natural = evaluation["natural"]
    return {
        "clean_accuracy": evaluation["clean_accuracy"],
        "robust_accuracy": evaluation["robust_accuracy"],
        "natural/clean_accuracy": natural["clean_accuracy"],
        "natural/robust_accuracy": natural["robust_accuracy"],
        "clean_drop": verdict["clean_drop"],
        "trust_flags": len(evaluation["flags"]),
        "gate_passed": float(verdict["passed"]),
        **{f"robust_accuracy/{k}": v for k, v in evaluation["attacks"].items()},
        **{f"natural/robust_accuracy/{k}": v for k, v in natural["attacks"].items()},
        **threat_metrics(evaluation.get("threats") or {}),
        **certified_metrics(evaluation.get("certified")),
        # Where C&W ran: its median is None when over half the points were not found, and
        # ``finite_metrics`` leaves it out then, the share not found saying why.
        **{
            key: evaluation[key]
            for key in ("cw_median_l2", "cw_not_found_share")
            if evaluation.get("cw_not_found_share") is not None
        },
    }


def threat_metrics(threats: dict) -> dict[str, float | None]:
    """The threat profile's accuracies, hardened and natural, per threat (``None`` without a
    natural model: ``finite_metrics`` leaves it out)."""
    metrics: dict[str, float | None] = {}
    for name, figures in threats.items():
        # Named as the suite's per-attack figures are (robust_accuracy/<attack>).
        metrics[f"threat_accuracy/{name}"] = figures["hardened"]
        metrics[f"natural/threat_accuracy/{name}"] = figures["natural"]
    return metrics


def finite_metrics(metrics: dict[str, float | None]) -> tuple[dict[str, float], list[str]]:
    """The metrics MLflow can honestly hold, and the ones left out: ``None``, NaN and infinities,
    as ``key=value``, named in a warning here and in the run's ``SKIPPED_TAG`` by the caller,
    rather than logged as numbers no reader can compare."""
    kept, skipped = {}, []
    for key, value in metrics.items():
        if value is not None and math.isfinite(value):
            kept[key] = value
        else:
            skipped.append(f"{key}={value}")
    if skipped:
        log.warning("not logged to MLflow (no finite value): %s", ", ".join(skipped))
    return kept, skipped


def log_run_evidence(config: Config, layout: Layout, evaluation: dict, verdict: dict) -> None:
    """Params, per-epoch and final metrics, and the files, into the active run."""
    mlflow.log_params(flatten(config.to_dict()))
    skipped: list[str] = []
    for stage in ("warmup", "train"):
        for row in _read_history(layout.history_file(stage)):
            step = int(row.pop("epoch"))
            figures, left_out = finite_metrics({f"{stage}/{k}": v for k, v in row.items()})
            mlflow.log_metrics(figures, step)
            skipped += [f"{item} (epoch {step})" for item in left_out]
    costs = cost_summary(layout, config.report.price_per_hour, evaluation)
    # A cost that does not apply (no price, no time) is None: not a metric, not worth a warning.
    costs = {f"cost/{key}": value for key, value in costs.items() if value is not None}
    for metrics in (evaluation_metrics(evaluation, verdict), costs):
        figures, left_out = finite_metrics(metrics)
        mlflow.log_metrics(figures)
        skipped += left_out
    if skipped:
        mlflow.set_tag(SKIPPED_TAG, ", ".join(skipped)[:5000])
    for stage in ("warmup", "train", "evaluate", "gate"):
        mlflow.log_artifact(str(layout.metrics_file(stage)), "metrics")
    for path in (
        layout.history_file("warmup"),
        layout.history_file("train"),
        layout.curves_file,
        *layout.evaluation_plots,
    ):
        mlflow.log_artifact(str(path), "plots")
    mlflow.log_artifact(str(layout.report_file), "reports")
    mlflow.log_artifact(str(layout.prepared_meta), "data")
    # The natural baseline too: `iocane evaluate` re-runs the comparison and the transfer
    # attack from it.
    log_version_model_files(layout.model_file("train"), layout.model_file("warmup"))


def unreachable_message(uri: str, error: BaseException, when: str, then: str) -> str:
    """One line for a tracking server that did not answer: which server, ``when``, what happened
    (``[Errno 111] Connection refused``, say), and ``then``: what to do."""
    found = re.search(r"\[Errno -?\d+\][^'\")]*|too many \d+ error responses", str(error))
    reason = found.group(0).strip() if found else type(error).__name__
    return f"the MLflow tracking server {uri} did not answer {when} ({reason}); {then}"


@contextmanager
def server_must_answer(root: Path, *, when: str, then: str) -> Iterator[None]:
    """A transient error of the block (the server did not answer) as ``RegistryUnreachable``
    with ``unreachable_message``'s one line; any other error as it is."""
    try:
        yield
    except Exception as error:
        if not is_transient(error):
            raise
        raise RegistryUnreachable(
            unreachable_message(tracking_uri(root), error, when=when, then=then)
        ) from error
