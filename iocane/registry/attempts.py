"""Every ``iocane run`` is an attempt with an MLflow run of its own, open while it works.

The run is created when the flow starts, with the params, and the ``register`` stage logs the
evidence into it. It always ends with a status that says how the attempt ended: FINISHED,
FAILED (an error, with the message as the ``iocane.outcome`` tag) or KILLED (SIGINT/SIGTERM).
A process killed outright (SIGKILL, a crash of the machine) cannot close its run, so the next
attempt in the same project does: it holds the project lock, so no other attempt of this project
is alive, and any run of this project and host still RUNNING was abandoned. The new run names
the attempts it found that way (``iocane.previous_attempts``) and, when a stage resumed from a
checkpoint, what it resumed from (``iocane.resumed``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Param, RunStatus
from mlflow.exceptions import MlflowException
from prefect.exceptions import TerminationSignal  # Prefect's SIGTERM

from iocane.base.config import Config
from iocane.base.files import read_json
from iocane.base.interrupts import Interrupted
from iocane.base.layout import Layout
from iocane.registry.tracking import flatten, run_name, server_must_answer, tracking_uri

log = logging.getLogger("iocane")

PROJECT_TAG = "iocane.project"
HOST_TAG = "iocane.host"
PID_TAG = "iocane.pid"
OUTCOME_TAG = "iocane.outcome"
PREVIOUS_TAG = "iocane.previous_attempts"
RESUMED_TAG = "iocane.resumed"


@dataclass(frozen=True)
class Attempt:
    run_id: str
    experiment_id: str
    abandoned: tuple[str, ...]  # runs of earlier attempts that were killed, now marked so
    started: float  # time.time() at the start


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment called ``name``, created when missing (a concurrent creation wins)."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def mark_abandoned_attempts(client: MlflowClient, experiment: str, layout: Layout) -> list[str]:
    """Close, as KILLED, this project's runs on this host that are still RUNNING. Call it only
    under the project lock: then none of their processes is alive."""
    runs = client.search_runs(
        [experiment],
        filter_string=(
            "attributes.status = 'RUNNING' "
            f"and tags.`{PROJECT_TAG}` = '{layout.root}' "
            f"and tags.`{HOST_TAG}` = '{socket.gethostname()}'"
        ),
    )
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "?")
        client.set_tag(
            run.info.run_id,
            OUTCOME_TAG,
            f"killed: its process (pid {pid}) ended without closing the run (SIGKILL or a "
            "crash); closed by the next attempt",
        )
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        log.warning(
            "the MLflow run %s of an earlier attempt (pid %s) was left running by a killed "
            "process: marked KILLED",
            run.info.run_id,
            pid,
        )
    return [run.info.run_id for run in runs]


def begin_attempt(config: Config, layout: Layout) -> Attempt:
    client = MlflowClient(tracking_uri=tracking_uri(layout.root))
    experiment = experiment_id(client, config.registry.model_name)
    abandoned = mark_abandoned_attempts(client, experiment, layout)
    tags = {
        PROJECT_TAG: str(layout.root),
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
    }
    if abandoned:
        tags[PREVIOUS_TAG] = ",".join(abandoned)
    run = client.create_run(
        experiment,
        run_name=run_name(config),
        tags=tags,
    )
    params = [Param(key, str(value)) for key, value in flatten(config.to_dict()).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
        client.log_batch(run.info.run_id, params=params[start : start + 100])
    log.info("MLflow run %s records this attempt", run.info.run_id)
    return Attempt(run.info.run_id, experiment, tuple(abandoned), time.time())


def resumed_description(training: dict) -> str | None:
    """``after epoch 3`` or ``in epoch 4 after step 17``; None for a stage that did not resume."""
    epoch, step = training.get("resumed_after_epoch"), training.get("resumed_after_step")
    if epoch is None:
        return None
    return f"in epoch {epoch + 1} after step {step}" if step else f"after epoch {epoch}"


def end_attempt(attempt: Attempt, layout: Layout, error: BaseException | None) -> None:
    """Close the attempt's run with the status that says how it ended."""
    client = MlflowClient(tracking_uri=tracking_uri(layout.root))
    resumed = []
    for stage in ("warmup", "train"):
        path = layout.metrics_file(stage)
        # Only a stage this attempt ran: an older file describes an earlier attempt's training.
        ran_now = path.exists() and path.stat().st_mtime >= attempt.started
        description = resumed_description(read_json(path)) if ran_now else None
        if description:
            resumed.append(f"{stage} {description}")
    if resumed:
        client.set_tag(attempt.run_id, RESUMED_TAG, "; ".join(resumed))
    if error is None:
        status, outcome = RunStatus.FINISHED, "finished"
    elif isinstance(error, Interrupted | KeyboardInterrupt | TerminationSignal):
        status, outcome = RunStatus.KILLED, f"killed: {error or type(error).__name__}"
    else:
        status, outcome = RunStatus.FAILED, f"failed: {type(error).__name__}: {error}"
    client.set_tag(attempt.run_id, OUTCOME_TAG, outcome[:5000])
    client.set_terminated(attempt.run_id, RunStatus.to_string(status))


@contextmanager
def attempt_run(config: Config, layout: Layout) -> Iterator[Attempt]:
    """An MLflow run for the block, closed FINISHED, FAILED or KILLED as the block ends.
    ``RegistryUnreachable`` when the tracking server does not answer at the start."""
    with server_must_answer(
        layout.root,
        when="at the start of the run",
        then="nothing was trained: start it (or fix MLFLOW_TRACKING_URI) and run again",
    ):
        attempt = begin_attempt(config, layout)
    try:
        yield attempt
    except BaseException as error:
        try:
            end_attempt(attempt, layout, error)
        except Exception as closing:  # the registry is down too: say so, raise the cause
            log.warning("could not close MLflow run %s: %s", attempt.run_id, closing)
        raise
    end_attempt(attempt, layout, None)
