"""End to end, as a new user tries it: a default run, a run with other params, then the default
run again. The third run restores every stage from the stage store (nothing is trained or
evaluated again) and returns version 1 instead of registering a copy of it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.schemas.objects import State

from iocane.base.files import sha256_file
from tests.helpers.pipeline_params import write_tiny_params

CACHED_STAGES = ("prepare", "warmup", "train", "evaluate", "gate")
# What the eps change made the second run recompute, and so what the third run restores.
RESTORED_STAGES = ("train", "evaluate", "gate")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("revisit")
    write_tiny_params(project / "params.yaml")
    return project


@pytest.fixture(scope="module")
def tracking_uri(project: Path) -> Iterator[str]:
    """A temporary Prefect API and a sqlite MLflow registry in the project."""
    from prefect.testing.utilities import prefect_test_harness

    uri = f"sqlite:///{project / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("PREFECT_HOME", str(project / ".prefect"))
        patch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(project / ".prefect" / "storage"))
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=120):
            yield uri


def _run(project: Path, *overrides: str) -> tuple[State, float]:
    from flows.harden import harden

    started = time.perf_counter()
    state = harden(
        params_path=str(project / "params.yaml"),
        overrides=list(overrides),
        project_root=str(project),
        return_state=True,
    )
    assert state.is_completed(), state.message
    return state, time.perf_counter() - started


def _state_names(state: State) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]})
        )
    return {run.name.rsplit("-", 1)[0]: run.state_name for run in runs}


def _outputs(project: Path) -> dict[str, str]:
    names = ("checkpoints/train/model.pt", "metrics/train.json", "metrics/evaluate.json")
    return {name: sha256_file(project / name) for name in names}


def _training_lines(messages: list[str]) -> list[str]:
    return [
        message
        for message in messages
        if message.startswith(("warmup epoch", "train epoch"))
        or "resuming" in message
        or "already trained" in message
    ]


class Lines(logging.Handler):
    """The messages of the ``iocane`` logger while it is attached, whatever Prefect's logging
    setup does with their propagation."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def iocane_lines() -> Iterator[list[str]]:
    logger, handler = logging.getLogger("iocane"), Lines()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_revisiting_the_default_restores_every_stage_and_returns_version_1(
    project: Path, tracking_uri: str
) -> None:
    first, first_seconds = _run(project)
    assert first.result()["version"] == "1"
    produced = _outputs(project)

    with iocane_lines() as messages:
        other, _ = _run(project, "train.eps=0.05")
    assert other.result()["version"] == "2"
    assert _outputs(project) != produced
    assert _training_lines(messages), "the eps change trains"

    with iocane_lines() as messages:
        again, again_seconds = _run(project)
    restored = {message.split(":")[0] for message in messages if ": restored " in message}
    assert restored == set(RESTORED_STAGES), messages
    # Nothing trained: no epoch line, no resume from a checkpoint.
    assert not _training_lines(messages), messages
    names = _state_names(again)
    assert {stage: names[stage] for stage in CACHED_STAGES} == dict.fromkeys(
        CACHED_STAGES, "Cached"
    )
    assert names["register"] == "Completed"
    assert _outputs(project) == produced, "byte for byte the outputs of the first run"

    result = again.result()
    assert result["version"] == "1", "the same evidence as version 1: no copy registered"
    for figure in ("clean_accuracy", "robust_accuracy", "data_fingerprint"):
        assert result[figure] == first.result()[figure]
    client = MlflowClient(tracking_uri=tracking_uri)
    versions = client.search_model_versions("name='iocane-test'")
    assert sorted(str(version.version) for version in versions) == ["1", "2"]
    runs = project / ".iocane" / "cache" / "runs"
    assert {stage: len(list((runs / stage).iterdir())) for stage in CACHED_STAGES} == {
        "prepare": 1,
        "warmup": 1,
        "train": 2,
        "evaluate": 2,
        "gate": 2,
    }
    print(
        f"\nfirst run {first_seconds:.1f} s, revisit {again_seconds:.1f} s "
        f"({again_seconds / first_seconds:.0%} of the first)"
    )
