"""The ``harden`` flow: prepare -> warmup -> train -> evaluate -> gate -> register.

Straight-line wiring of the same plain functions the DVC stages run (see ``iocane.stages``).
Each task reads its inputs from the project layout and returns a reference (a path and a hash),
so no tensor ever passes through Prefect. A failed gate still registers the version, tagged
``gate=failed`` and without an alias: the evidence of every attempt stays reviewable.
"""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from iocane.config import Config, load_config
from iocane.files import read_json
from iocane.layout import Layout
from tasks.data import prepare_task
from tasks.evaluate import evaluate_task
from tasks.gate import gate_task
from tasks.registry import Registration, register_task
from tasks.train import train_task, warmup_task


def metrics_table(evaluation: dict) -> list[dict]:
    """Rows of the ``robustness-metrics`` artifact: each figure, hardened beside natural.
    Some attacks run against the hardened model only (transfer from the natural model)."""
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
    return rows


def png_data_url(path: Path) -> str:
    """A PNG as a ``data:`` URL. Prefect image artifacts are URLs; a data URL needs no server
    that the Prefect UI's browser can reach, and the artifact outlives the run's local files."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def inline_images(markdown: str, layout: Layout) -> str:
    """The report with its relative plot links (right beside the files, in git and MLflow)
    replaced by data URLs, so the Prefect UI shows the images."""
    for plot in (layout.curves_plot, layout.examples_plot):
        markdown = markdown.replace(f"](../plots/{plot.name})", f"]({png_data_url(plot)})")
    return markdown


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report(layout: Layout, verdict: dict, registration: Registration) -> None:
    """The Prefect artifacts: the markdown report, the metrics table and the two figures."""
    evaluation = read_json(layout.metrics_file("evaluate"))
    verdict_lines = [f"## Gate: {'passed' if verdict['passed'] else 'FAILED'}", ""]
    verdict_lines += [f"- {reason}" for reason in verdict["reasons"]]
    verdict_lines += [
        "",
        f"Registered **{registration.name} v{registration.version}** "
        f"(alias: {registration.alias or 'none'}; {registration.reason}).",
    ]
    create_markdown_artifact(
        key="robustness-report",
        markdown=inline_images(layout.report_file.read_text(), layout)
        + "\n"
        + "\n".join(verdict_lines)
        + "\n",
        description="Threat model, per-attack robust accuracy, trust flags and the gate verdict",
    )
    rows = metrics_table(evaluation)
    create_table_artifact(
        key="robustness-metrics",
        table=rows,
        description=f"{evaluation['threat_model']} eps {evaluation['eps']:g}, "
        f"{evaluation['n_samples']} test images",
    )
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


@flow(name="harden")
def harden(
    params_path: str = "params.yaml", overrides: list[str] | None = None, project_root: str = "."
) -> dict:
    """Harden a model end to end and register it; returns the gate verdict and the version."""
    config: Config = load_config(params_path, overrides or [])
    layout = Layout(Path(project_root).resolve())
    prepared = prepare_task(config, layout)
    natural = warmup_task(config, layout, wait_for=[prepared])
    hardened = train_task(config, layout, wait_for=[natural])
    evaluation = evaluate_task(config, layout, wait_for=[hardened])
    verdict = gate_task(config, layout, wait_for=[evaluation])
    registration = register_task(config, layout, wait_for=[verdict])
    publish_report(layout, verdict, registration)
    return {
        "gate": "passed" if verdict["passed"] else "failed",
        "reasons": verdict["reasons"],
        "clean_accuracy": evaluation["clean_accuracy"],
        "robust_accuracy": evaluation["robust_accuracy"],
        "registered_model": registration.name,
        "version": registration.version,
        "alias": registration.alias,
        "data_fingerprint": prepared.fingerprint,
    }
