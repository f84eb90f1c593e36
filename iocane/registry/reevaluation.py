"""``iocane evaluate``: the suite, curves and report for a version already in the registry,
logged back to the version's own MLflow run and summarised in tags on the version.

The version is judged under its own threat model (its ``threat_model`` and ``eps`` tags),
whatever params.yaml says now, with the natural baseline registered beside it, so a
re-evaluation with a stronger preset is comparable with the figures the version was registered
with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from iocane.base.config import Config, replace
from iocane.base.files import confined
from iocane.base.layout import Layout
from iocane.base.settings import resolve_device
from iocane.data.prepared import load_prepared
from iocane.model_files import (
    NATURAL_MODEL_ARTIFACT,
    load_model,
    registered_version,
    version_model_file,
)
from iocane.reports.certified import certified_tags
from iocane.reports.evaluation import evaluate_and_report

log = logging.getLogger("iocane")


@dataclass(frozen=True)
class Reevaluation:
    name: str
    version: str
    metrics: dict
    report_file: Path


def resolve_model_uri(uri: str, root: Path) -> tuple[MlflowClient, ModelVersion]:
    """Resolve ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` to (client, version); a URI
    of another shape, or naming nothing in the registry, is a ``ModelUriError`` (exit 2)."""
    return registered_version(uri, root)


def reevaluate(
    config: Config, client: MlflowClient, version: ModelVersion, *, root: Path, out: Path | None
) -> Reevaluation:
    """Evaluate ``version`` on the project's prepared data, write the report under ``out``
    (default ``reports/evaluations/NAME-vN``, inside the project), and log it back."""
    name, number = version.name, str(version.version)
    layout = Layout(
        confined(
            out if out is not None else Path("reports", "evaluations", f"{name}-v{number}"),
            root,
            "--out" if out is not None else "the report directory",
        )
    )
    device = resolve_device()
    hardened, _ = load_model(version_model_file(version.run_id, root), device)
    natural, _ = load_model(
        version_model_file(version.run_id, root, NATURAL_MODEL_ARTIFACT), device
    )
    data = load_prepared(Layout(root))
    if version.tags.get("data_fingerprint") != data.meta["fingerprint"]:
        log.warning(
            "warning: data/prepared differs from the data this version was trained on (%s)",
            version.tags.get("data_fingerprint", "unknown")[:12],
        )
    # The version is judged under its own threat model, whatever params.yaml says now.
    train = replace(
        config.train,
        norm=version.tags.get("threat_model", config.train.norm),
        eps=float(version.tags.get("eps", config.train.eps)),
    )
    config = replace(config, train=train)
    metrics = evaluate_and_report(config, hardened, natural, data, layout)
    log_back(client, version.run_id, version, layout, config=config, metrics=metrics)
    return Reevaluation(name, number, metrics, layout.report_file)


def log_back(
    client: MlflowClient,
    run_id: str | None,
    version: ModelVersion | None,
    layout: Layout,
    *,
    config: Config,
    metrics: dict,
) -> None:
    """The files into the run (``run_id``) under ``evaluations/STAMP``, the summary as tags on
    the registered ``version``, else on the run. Without a run (a version registered from a
    path), only the version's tags."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    files = [
        layout.metrics_file("evaluate"),
        layout.report_file,
        layout.curves_file,
        *layout.evaluation_plots,
    ]
    if layout.model_card_file.exists():  # written for a model iocane did not register
        files.append(layout.model_card_file)
    for path in files if run_id else []:
        client.log_artifact(run_id, str(path), f"evaluations/{stamp}")
    for key, value in {
        "reevaluated_at": stamp,
        "reevaluated_preset": config.evaluate.preset,
        "reevaluated_robust_accuracy": f"{metrics['robust_accuracy']:.6f}",
        "reevaluated_flags": str(len(metrics["flags"])),
        # proven-measured, where evaluate.certify ran (iocane evaluate certifies what it can)
        **{
            f"reevaluated_{key}": value
            for key, value in certified_tags(metrics.get("certified")).items()
        },
    }.items():
        if version is not None:
            client.set_model_version_tag(version.name, str(version.version), key, value)
        elif run_id:
            client.set_tag(run_id, key, value)
