"""The ``harden`` flow (prepare -> warmup -> train -> evaluate -> gate -> register) and the
data-triggered ``reharden`` flow.

Straight-line wiring of the same plain functions the DVC stages run (see ``iocane.stages``).
Each task reads its inputs from the project layout and returns a reference (a path and a hash),
so no tensor ever passes through Prefect. A failed gate still registers the version, tagged
``gate=failed`` and without an alias: the evidence of every attempt stays reviewable.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from iocane.base.config import Config, load_config
from iocane.base.layout import Layout
from iocane.base.locks import project_lock
from iocane.registry.attempts import attempt_run
from tasks.prefect_tasks import (
    champion_data_task,
    evaluate_task,
    gate_task,
    prepare_task,
    publish_report_task,
    register_task,
    run_stage,
    train_task,
    warmup_task,
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
        publish_report_task(layout, verdict, registration)
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
