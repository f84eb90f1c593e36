"""The Prefect artifacts of a hardening run: what a person sees in the Prefect UI.

The markdown report with its figures inlined, the metrics table, the three figures, the gate
verdict, and links to the MLflow run and the registered version. ``publish_report`` is a plain
function; its Prefect task (``publish-report``) is in ``tasks.prefect_tasks``, which passes the
MLflow UI's address (``mlflow_ui_url``) so that this module needs nothing from the registry.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from iocane.base.files import read_json
from iocane.base.layout import Layout
from iocane.base.settings import settings
from iocane.reports.certified import certified_table_rows


class RegisteredVersion(Protocol):
    """What the artifacts say about a registered version (``iocane.registry``'s
    ``Registration`` has these fields)."""

    name: str
    version: str
    alias: str | None
    run_id: str
    gate: str
    reason: str
    experiment_id: str


def metrics_table(evaluation: dict) -> list[dict]:
    """Rows of the ``robustness-metrics`` artifact: each figure, hardened beside natural, then
    the threat profile's and the certified band's. Some attacks run against the hardened model
    only (transfer from the natural model)."""
    natural = evaluation["natural"]
    rows = [
        {
            "metric": "clean_accuracy",
            "hardened": evaluation["clean_accuracy"],
            "natural": natural["clean_accuracy"],
        },
        {
            "metric": "robust_accuracy (worst case)",
            "hardened": evaluation["robust_accuracy"],
            "natural": natural["robust_accuracy"],
        },
    ]
    rows += [
        {
            "metric": f"robust_accuracy/{name}",
            "hardened": value,
            "natural": natural["attacks"].get(name),
        }
        for name, value in evaluation["attacks"].items()
    ]
    rows += [
        {
            "metric": f"threat_accuracy/{name} ({threat['budget_text']}, {threat['measure']})",
            "hardened": threat["hardened"],
            "natural": threat["natural"],
        }
        for name, threat in (evaluation.get("threats") or {}).items()
    ]
    rows += certified_table_rows(evaluation.get("certified"))
    return rows


def png_data_url(path: Path) -> str:
    """A PNG as a ``data:`` URL. Prefect image artifacts are URLs; a data URL needs no server
    that the Prefect UI's browser can reach, and the artifact outlives the run's local files."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def inline_images(markdown: str, layout: Layout) -> str:
    """The report with its relative plot links (right beside the files, in git and MLflow)
    replaced by data URLs, so the Prefect UI shows the images."""
    for plot in layout.evaluation_plots:
        markdown = markdown.replace(f"](../plots/{plot.name})", f"]({png_data_url(plot)})")
    return markdown


def mlflow_ui_url(tracking_uri: str) -> str:
    """Where a person opens the MLflow UI: ``IOCANE_MLFLOW_UI_URL``, else the tracking server
    itself, else the address ``mlflow ui`` serves on by default."""
    explicit = settings().mlflow_ui_url
    if explicit:
        return explicit.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def verdict_markdown(verdict: dict, registration: RegisteredVersion) -> str:
    """The gate's checks as a table, its reasons, and what the registry did with the version."""
    lines = [f"## Gate: {'passed' if verdict['passed'] else 'FAILED'}", ""]
    lines += ["| check | value | rule | threshold | passed |", "|---|---|---|---|---|"]
    lines += [
        f"| {check['name']} | {check['value']:.4f} | {check['rule']} | "
        f"{check['threshold']:.4f} | {'yes' if check['passed'] else 'NO'} |"
        for check in verdict["checks"]
    ]
    lines += [""] + [f"- {reason}" for reason in verdict["reasons"]]
    lines += [
        "",
        f"Registered **{registration.name} v{registration.version}** "
        f"(alias: {registration.alias or 'none'}; {registration.reason}).",
    ]
    return "\n".join(lines) + "\n"


def publish_report(
    layout: Layout, verdict: dict, registration: RegisteredVersion, *, mlflow_ui: str
) -> None:
    """The Prefect artifacts of every run: the markdown report, the metrics table, the figures,
    the gate verdict and links (into the MLflow UI at ``mlflow_ui``) to the MLflow run and the
    registered version. Called inside a Prefect task run."""
    evaluation = read_json(layout.metrics_file("evaluate"))
    verdict_text = verdict_markdown(verdict, registration)
    create_markdown_artifact(
        key="robustness-report",
        markdown=inline_images(layout.report_file.read_text(), layout) + "\n" + verdict_text,
        description="Threat model, per-attack robust accuracy, trust flags and the gate verdict",
    )
    create_markdown_artifact(
        key="gate-verdict",
        markdown=verdict_text,
        description=f"gate {'passed' if verdict['passed'] else 'failed'}",
    )
    create_table_artifact(
        key="robustness-metrics",
        table=metrics_table(evaluation),
        description=f"{evaluation['threat_model']} eps {evaluation['eps']:g}, "
        f"{evaluation['n_samples']} test images",
    )
    _publish_figures(layout)
    create_link_artifact(
        key="mlflow-run",
        link=f"{mlflow_ui}/#/experiments/{registration.experiment_id}/runs/{registration.run_id}",
        link_text=f"MLflow run {registration.run_id}",
        description="Params, metrics, plots, reports and the model of this hardening run",
    )
    create_link_artifact(
        key="registered-version",
        link=f"{mlflow_ui}/#/models/{quote(registration.name)}/versions/{registration.version}",
        link_text=f"{registration.name} v{registration.version}",
        description=f"gate {registration.gate}; alias {registration.alias or 'none'}",
    )


def _publish_figures(layout: Layout) -> None:
    """The four figures as image artifacts."""
    create_image_artifact(
        image_url=png_data_url(layout.curves_plot),
        key="robustness-curves",
        description="Accuracy against perturbation size, Linf and L2, hardened and natural model",
    )
    create_image_artifact(
        image_url=png_data_url(layout.examples_plot),
        key="adversarial-examples",
        description="Clean and attacked test images with the hardened model's predictions",
    )
    create_image_artifact(
        image_url=png_data_url(layout.alignment_plot),
        key="perceptual-alignment",
        description="Input gradients and large-eps targeted images, natural beside hardened",
    )
    create_image_artifact(
        image_url=png_data_url(layout.threat_plot),
        key="threat-profile",
        description="Accuracy per threat at its budget (the threat profile), natural beside "
        "hardened",
    )
