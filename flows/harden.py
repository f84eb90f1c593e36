"""The ``harden`` flow (prepare -> warmup -> train -> evaluate -> gate -> register) and the
data-triggered ``reharden`` flow.

Straight-line wiring of the same plain functions the DVC stages run (see ``iocane.stages``).
Each task reads its inputs from the project layout and returns a reference (a path and a hash),
so no tensor ever passes through Prefect. A failed gate still registers the version, tagged
``gate=failed`` and without an alias: the evidence of every attempt stays reviewable.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from urllib.parse import quote

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE

from iocane.config import Config, load_config
from iocane.files import read_json
from iocane.layout import Layout
from iocane.locks import project_lock
from iocane.registry.attempts import attempt_run
from iocane.registry.registration import Registration
from iocane.registry.tracking import tracking_uri
from tasks.prefect_tasks import (
    champion_data_task,
    evaluate_task,
    gate_task,
    prepare_task,
    register_task,
    run_stage,
    train_task,
    warmup_task,
)


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
    for plot in (layout.curves_plot, layout.examples_plot, layout.alignment_plot):
        markdown = markdown.replace(f"](../plots/{plot.name})", f"]({png_data_url(plot)})")
    return markdown


def mlflow_ui_url(tracking_uri: str) -> str:
    """Where a person opens the MLflow UI: ``IOCANE_MLFLOW_UI_URL``, else the tracking server
    itself, else the address ``mlflow ui`` serves on by default."""
    explicit = os.environ.get("IOCANE_MLFLOW_UI_URL")
    if explicit:
        return explicit.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def verdict_markdown(verdict: dict, registration: Registration) -> str:
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


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report(layout: Layout, verdict: dict, registration: Registration) -> None:
    """The Prefect artifacts of every run: the markdown report, the metrics table, the two
    figures, the gate verdict and links to the MLflow run and the registered version."""
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
    create_image_artifact(
        image_url=png_data_url(layout.alignment_plot),
        key="perceptual-alignment",
        description="Input gradients and large-eps targeted images, natural beside hardened",
    )
    ui = mlflow_ui_url(tracking_uri(layout.root))
    create_link_artifact(
        key="mlflow-run",
        link=f"{ui}/#/experiments/{registration.experiment_id}/runs/{registration.run_id}",
        link_text=f"MLflow run {registration.run_id}",
        description="Params, metrics, plots, reports and the model of this hardening run",
    )
    create_link_artifact(
        key="registered-version",
        link=f"{ui}/#/models/{quote(registration.name)}/versions/{registration.version}",
        link_text=f"{registration.name} v{registration.version}",
        description=f"gate {registration.gate}; alias {registration.alias or 'none'}",
    )


@flow(name="harden")
def harden(
    params_path: str = "params.yaml", overrides: list[str] | None = None, project_root: str = "."
) -> dict:
    """Harden a model end to end and register it; returns the gate verdict and the version.
    Stages whose params, inputs and code did not change come from the cache."""
    config: Config = load_config(params_path, overrides or [])
    layout = Layout(Path(project_root).resolve())
    # One run at a time in a project (a second one waits and says so); every attempt has an
    # MLflow run that ends FINISHED, FAILED or KILLED (iocane.registry.attempts).
    with project_lock(layout.run_lock, "iocane run"), attempt_run(config, layout) as attempt:
        prepared = run_stage(prepare_task, config, layout)
        natural = run_stage(warmup_task, config, layout, wait_for=[prepared])
        hardened = run_stage(train_task, config, layout, wait_for=[natural])
        evaluation = run_stage(evaluate_task, config, layout, wait_for=[hardened])
        verdict = run_stage(gate_task, config, layout, wait_for=[evaluation])
        registration = register_task(config, layout, attempt.run_id, wait_for=[verdict])
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


@flow(name="reharden")
def reharden(
    params_path: str = "params.yaml", overrides: list[str] | None = None, project_root: str = "."
) -> dict:
    """Re-harden when the data changed: prepare the data and compare its fingerprint with the
    one the ``champion`` was trained on. The same: say so and stop. Different, or no champion
    yet: run ``harden`` (as a subflow; its unchanged stages come from the cache)."""
    config: Config = load_config(params_path, overrides or [])
    layout = Layout(Path(project_root).resolve())
    logger = get_run_logger()
    with project_lock(layout.run_lock, "iocane run --if-data-changed"):
        return _reharden(config, layout, logger, params_path, overrides)


def _reharden(
    config: Config,
    layout: Layout,
    logger: logging.Logger | logging.LoggerAdapter,
    params_path: str,
    overrides: list[str] | None,
) -> dict:
    prepared = run_stage(prepare_task, config, layout)
    champion = champion_data_task(config, layout, wait_for=[prepared])
    name = config.registry.model_name
    if champion is not None and champion.data_fingerprint == prepared.fingerprint:
        decision = (
            f"data unchanged: fingerprint {prepared.fingerprint[:12]} is the one {name} "
            f"v{champion.version} (champion) was trained on; nothing to do"
        )
        logger.info(decision)
        create_markdown_artifact(key="reharden-decision", markdown=decision)
        return {"status": "unchanged", "reason": decision, "data_fingerprint": prepared.fingerprint}
    if champion is None:
        decision = f"{name} has no champion yet: hardening"
    else:
        decision = (
            f"data changed: fingerprint {prepared.fingerprint[:12]} differs from "
            f"{champion.data_fingerprint[:12]}, the data of {name} v{champion.version} "
            "(champion): re-hardening"
        )
    logger.info(decision)
    create_markdown_artifact(key="reharden-decision", markdown=decision)
    return {
        "status": "rehardened",
        "reason": decision,
        **harden(params_path, overrides, str(layout.root)),
    }
