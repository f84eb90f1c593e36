"""The pipeline's stages as Prefect tasks: the plain stage functions the DVC stages call, cached
by the key of ``iocane.pipeline.keys`` (params, input hashes, code), each followed by storing what
it wrote (``iocane.pipeline.store``), so that a configuration revisited later is restored, not
recomputed. Results are stored as JSON, never pickled.

They live in this module, not beside each function, so that a DVC stage process never imports
Prefect: ``python -m iocane.stages train`` loads torch and its own code, no more.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TaskRunContext
from prefect.serializers import JSONSerializer
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE

from iocane.base.config import Config
from iocane.base.layout import Layout
from iocane.pipeline.keys import stage_key
from iocane.pipeline.retries import RETRY_OPTIONS, retry_if_transient
from iocane.pipeline.store import outputs_current, restore_run, save_run, stored_result
from iocane.pipeline.sweep.links import snapshot
from iocane.registry.registration import Registration, champion_data
from iocane.registry.tracking import tracking_uri
from iocane.reports.artifacts import mlflow_ui_url, publish_report
from iocane.reports.sweep_summary import publish_summary
from tasks.evaluate import run_evaluate
from tasks.gate import run_gate
from tasks.prepare import run_prepare
from tasks.register import run_register
from tasks.sweep_point import run_sweep_point, run_sweep_warmup
from tasks.sweep_summary import run_sweep_summary
from tasks.train import run_train
from tasks.warmup import run_warmup

log = logging.getLogger("iocane")


@dataclass
class StageCache(CachePolicy):
    """Prefect cache policy: the key of ``stage_key`` (params, input hashes, code)."""

    stage: str = ""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return stage_key(self.stage, inputs["config"], inputs["layout"])


# The encoding Prefect stores task results with: a stage's result kept in its run record comes
# back as the same object (ModelRef, PreparedRef, dict) as Prefect's own cache returns.
_RESULTS = JSONSerializer()


def stage_task(function: Callable[[Config, Layout], Any], stage: str, **options: Any) -> Task:
    """The Prefect task of a stage: ``function`` (what the DVC stage calls), cached by
    ``StageCache``, then its outputs and result stored under its key. When the files on disk
    are already that key's outputs (restored by ``run_stage``), the stored result is returned
    without running it, also where Prefect's result store lacks it."""

    @functools.wraps(function)
    def run_and_store(config: Config, layout: Layout) -> Any:
        key = stage_key(stage, config, layout)
        found, stored = stored_result(stage, key, layout)
        if found and not PREFECT_TASKS_REFRESH_CACHE.value():
            log.info("%s: its outputs are on disk; returning the result stored with them", stage)
            return _RESULTS.loads(json.dumps(stored).encode())
        result = function(config, layout)
        save_run(stage, key, layout, json.loads(_RESULTS.dumps(result)))
        return result

    return task(
        run_and_store,
        name=stage,
        cache_policy=StageCache(stage=stage),
        result_serializer="json",
        **options,
    )


def run_stage(cached_task: Task, config: Config, layout: Layout, **options: Any) -> Any:
    """Call a cached stage task. When the files on disk are not the outputs of its key, put
    them back from the stage store if that key ran before (the task then returns its stored
    result); otherwise run it and overwrite Prefect's stored result. With
    ``PREFECT_TASKS_REFRESH_CACHE=true`` every stage runs."""
    stage = cached_task.name
    key = stage_key(stage, config, layout)
    current = not PREFECT_TASKS_REFRESH_CACHE.value() and (
        outputs_current(stage, key, layout) or restore_run(stage, key, layout)
    )
    return cached_task.with_options(refresh_cache=not current)(config, layout, **options)


# A download can flake; a retry of bad data fails the same way and is not attempted.
prepare_task = stage_task(
    run_prepare, "prepare", **RETRY_OPTIONS, retry_condition_fn=retry_if_transient
)
# No retries: a failed training run is not repeated blindly. Run the flow again and it resumes
# from the last complete checkpoint (the run key guards against resuming other params or code).
warmup_task = stage_task(run_warmup, "warmup")
train_task = stage_task(run_train, "train")
evaluate_task = stage_task(run_evaluate, "evaluate")
gate_task = stage_task(run_gate, "gate")

# Not cached by Prefect: the registry, not a local result store, knows what is registered
# (``registered_from`` makes a rerun idempotent). Retried, with backoff, when the registry
# could not be reached; the failed attempt's version was deleted, so a retry starts clean.
register_task = task(
    run_register,
    name="register",
    cache_policy=NO_CACHE,
    **RETRY_OPTIONS,
    retry_condition_fn=retry_if_transient,
)

# Where the champion came from (``reharden`` compares its data fingerprint); a read, retried.
champion_data_task = task(
    champion_data,
    name="champion-data",
    cache_policy=NO_CACHE,
    **RETRY_OPTIONS,
    retry_condition_fn=retry_if_transient,
)

# The sweep's stages (``flows/sweep.py``). Not cached: each point trains in a directory of its own
# sweep, where no earlier result lies; a failed point is not retried (its MLflow run says why).
sweep_warmup_task = task(run_sweep_warmup, name="sweep-warmup", cache_policy=NO_CACHE)
sweep_point_task = task(run_sweep_point, name="sweep-point", cache_policy=NO_CACHE)
# The prepared data as it is now, hard-linked into the sweep's directory for every point.
sweep_snapshot_task = task(snapshot, name="sweep-snapshot", cache_policy=NO_CACHE)


@task(name="sweep-summary", cache_policy=NO_CACHE)
def sweep_summary_task(
    config: Config, rows: list[dict], directory: str, parent_run_id: str, uri: str
) -> dict:
    """The sweep's ranking, summary files and MLflow records (``tasks.sweep_summary``), then
    its Prefect artifacts (``iocane.reports.sweep_summary.publish_summary``)."""
    summary = run_sweep_summary(config, rows, directory, parent_run_id, uri)
    publish_summary(Path(directory))
    return summary


@task(name="publish-report", cache_policy=NO_CACHE)
def publish_report_task(layout: Layout, verdict: dict, registration: Registration) -> None:
    """The Prefect artifacts of every run (``iocane.reports.artifacts.publish_report``), with
    links into the MLflow UI of the project's tracking server."""
    publish_report(
        layout, verdict, registration, mlflow_ui=mlflow_ui_url(tracking_uri(layout.root))
    )
