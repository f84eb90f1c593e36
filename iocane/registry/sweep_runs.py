"""The MLflow runs that record a sweep: a parent run for the sweep, a nested run per point (each
ends FINISHED, or FAILED with the error in the tag ``iocane.outcome``), and on the parent run the
ranking's clean floor and its winner. Points are compared, not promoted: nothing is registered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mlflow import MlflowClient

from iocane.registry.attempts import experiment_id


@contextlib.contextmanager
def tracked_sweep(uri: str, *, experiment: str, sweep_id: str, points: int) -> Iterator[str]:
    """The sweep's parent run (yields its id) in the experiment called ``experiment`` (created
    when missing) on the tracking server at ``uri``."""
    client = MlflowClient(tracking_uri=uri)
    with sweep_run(
        client, experiment_id=experiment_id(client, experiment), sweep_id=sweep_id, points=points
    ) as run_id:
        yield run_id


@contextlib.contextmanager
def sweep_run(
    client: MlflowClient, *, experiment_id: str, sweep_id: str, points: int
) -> Iterator[str]:
    """The sweep's parent MLflow run (yields its id): FINISHED when the block ends, FAILED with
    the error in the tag ``iocane.outcome`` when it raises."""
    run_id = client.create_run(
        experiment_id,
        run_name=sweep_id,
        tags={"iocane.sweep": sweep_id, "iocane.sweep_points": str(points)},
    ).info.run_id
    try:
        yield run_id
    except BaseException as error:
        client.set_tag(run_id, "iocane.outcome", f"{type(error).__name__}: {error}")
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


@contextlib.contextmanager
def point_run(client: MlflowClient, *, parent_run_id: str, point: str) -> Iterator[str]:
    """A point's MLflow run, nested in the sweep's (yields its id): FINISHED when the block
    ends, FAILED with the error in the tag ``iocane.outcome`` when it raises."""
    parent = client.get_run(parent_run_id)
    run_id = client.create_run(
        parent.info.experiment_id,
        run_name=point,
        tags={"mlflow.parentRunId": parent_run_id, "iocane.sweep_point": point},
    ).info.run_id
    try:
        yield run_id
    except BaseException as error:
        client.set_tag(run_id, "iocane.outcome", f"failed: {type(error).__name__}: {error}"[:5000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def log_ranking(client: MlflowClient, run: str, *, ranked: list[dict], floor: float) -> None:
    """The ranking's floor and its winner on the sweep's parent run: the best point's name as
    the tag ``iocane.sweep_best`` (none when no point clears the floor) and its figures."""
    client.log_param(run, "sweep.min_clean_accuracy", floor)
    best = ranked[0] if ranked and ranked[0]["rank"] == 1 else None
    client.set_tag(run, "iocane.sweep_best", best["point"] if best else "none")
    if best:
        for key in ("clean_accuracy", "robust_accuracy", "train_seconds", "train_cpu_seconds"):
            if best.get(key) is not None:
                client.log_metric(run, f"best_{key}", best[key])
