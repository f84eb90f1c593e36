"""Real processes killed for real: SIGKILL at random moments of training; SIGTERM and SIGKILL
of ``iocane run``, then two ``iocane run`` at once in the same project."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from iocane.base.layout import Layout
from tests.helpers.pipeline_params import write_tiny_params
from tests.helpers.prefect_homes import seeded_home
from tests.helpers.registry_files import copy_registry

pytestmark = [pytest.mark.fault]

# Long enough to be killed in the middle of, short enough for a test.
TRAINING = {"warmup": {"epochs": 1}, "train": {"epochs": 4, "eps_ramp_epochs": 1}}
# What a run spent rather than what it produced: a resumed run counts its own time and passes
# (iocane/reports/costs.py), so these differ from the uninterrupted run's by design.
EFFORT_KEYS = {"seconds", "resumed_after_epoch", "resumed_after_step", "images_trained"}
SECRET = "iocane-test-secret-value-7f3a"


def _env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "PREFECT_HOME": str(project / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(project / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "AWS_SECRET_ACCESS_KEY": SECRET,
    }


def _stage(project: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "iocane.stages", name],
        cwd=project,
        env=_env(project),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _iocane_run(project: Path, *args: str, stderr: Path | None = None) -> subprocess.Popen:
    """``iocane run`` in ``project``; its stderr into a file when ``stderr`` is given (to read
    while it runs), else piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "iocane.cli", "run", *args],
        cwd=project,
        env=_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr.open("w"),
        text=True,
    )


def _finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out or "", err or ""


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited early: {_finish(process)}"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def _final_metrics(project: Path) -> dict:
    figures = json.loads(Layout(project).metrics_file("train").read_text())
    return {
        key: value
        for key, value in figures.items()
        if key not in EFFORT_KEYS and not key.endswith(("_passes", "_images"))
    }


def _weights(project: Path) -> dict[str, torch.Tensor]:
    return torch.load(Layout(project).model_file("train"), weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def warmed_up(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose data is prepared and whose natural model is trained (DVC stages)."""
    project = tmp_path_factory.mktemp("warmed") / "project"
    project.mkdir()
    write_tiny_params(project / "params.yaml", **TRAINING)
    for stage in ("prepare", "warmup"):
        code, _, err = _finish(_stage(project, stage))
        assert code == 0, err
    return project


# How long the uninterrupted train stage took here (imports included): kills are timed as
# fractions of it, so that they land before the end on a fast machine and a slow one alike.
STAGE_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module")
def reference(warmed_up: Path) -> Path:
    """The same training, never interrupted."""
    reference = warmed_up.parent / "reference"
    shutil.copytree(warmed_up, reference)
    started = time.monotonic()
    code, _, err = _finish(_stage(reference, "train"))
    STAGE_SECONDS["train"] = time.monotonic() - started
    assert code == 0, err
    return reference


def _assert_same_training(project: Path, reference: Path) -> None:
    assert _final_metrics(project) == _final_metrics(reference)
    for name, tensor in _weights(reference).items():
        assert torch.equal(tensor, _weights(project)[name]), name


def test_sigkill_at_random_moments_then_reruns_finish_as_if_never_killed(
    warmed_up: Path,
    reference: Path,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    killed = tmp_path / "killed"
    shutil.copytree(warmed_up, killed)
    checkpoints = Layout(killed).checkpoint_dir("train")
    moments = random.Random(7)
    kills = 0
    while True:
        process = _stage(killed, "train")
        try:
            # Anywhere from the imports on: in a step, in the validation attack, in a checkpoint
            # write; early enough that the attempt cannot have finished.
            moment = moments.uniform(0.25, 0.6) * STAGE_SECONDS["train"]
            code, _, err = _finish(process, timeout=moment if kills < 4 else 600)
            break
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            kills += 1
            # Whatever moment it died at, every checkpoint on disk is whole.
            for path in checkpoints.glob("*.pt"):
                torch.load(path, weights_only=True)
    record_property("faults_injected", kills)
    assert code == 0, err
    assert kills >= 3, "the kills must land during training"
    _assert_same_training(killed, reference)
    assert not list(checkpoints.glob(".*.tmp")), "torn temp files are cleaned up"


# --- iocane run: SIGTERM, SIGKILL, rerun; then two at once ---------------------------------


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, prefect_home_template: Path, empty_registry: Path
) -> Path:
    project = tmp_path_factory.mktemp("runs") / "project"
    project.mkdir()
    write_tiny_params(project / "params.yaml", **TRAINING)
    seeded_home(prefect_home_template, project / ".prefect")
    copy_registry(empty_registry, project)
    return project


def _runs(project: Path) -> list:
    client = MlflowClient(tracking_uri=_env(project)["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("iocane-test")
    if experiment is None:
        return []
    return sorted(
        client.search_runs([experiment.experiment_id]), key=lambda run: run.info.start_time
    )


def _versions(project: Path) -> list:
    client = MlflowClient(tracking_uri=_env(project)["MLFLOW_TRACKING_URI"])
    return client.search_model_versions("name='iocane-test'")


def test_sigterm_then_sigkill_then_two_reruns_at_once(
    project: Path, reference: Path, record_property: Callable[[str, object], None]
) -> None:
    checkpoints = Layout(project).checkpoint_dir("train")

    # SIGTERM in training: the step finishes, its state is saved, the run is KILLED.
    first = _iocane_run(project)
    _wait_for(lambda: (checkpoints / "epoch-0001.pt").exists(), first, timeout=400)
    first.send_signal(signal.SIGTERM)
    code, _, err = _finish(first)
    assert code == 128 + signal.SIGTERM, err
    (message,) = [line for line in err.splitlines() if line.startswith("error: ")]
    # Within an epoch (saved at that step), or in its end-of-epoch work (saved with the epoch).
    assert re.search(
        r"train: stopped by SIGTERM (in epoch \d+ after step \d+ of \d+|after epoch \d+ was saved)",
        message,
    ), message
    assert "Traceback" not in err
    (run,) = _runs(project)
    assert run.info.status == "KILLED"
    assert run.data.tags["iocane.outcome"].startswith("killed: train: stopped by SIGTERM")
    assert _versions(project) == []

    # SIGKILL once it has trained further: nothing can close the MLflow run.
    saved = {path.name for path in checkpoints.glob("*.pt")}
    second = _iocane_run(project)
    _wait_for(lambda: bool({p.name for p in checkpoints.glob("epoch-*.pt")} - saved), second, 400)
    second.kill()
    second.wait()
    assert [run.info.status for run in _runs(project)] == ["KILLED", "RUNNING"]
    record_property("faults_injected", 2)

    # Two reruns at once: the first to take the project lock closes the abandoned run, resumes
    # and registers into its own run; the other waits, says so, and finds it all done.
    first = _iocane_run(project)
    # (The killed run's name is still in the lock file: wait for this one's.)
    _wait_for(lambda: f"(pid {first.pid} " in Layout(project).run_lock.read_text(), first, 300)
    # The lock holder is stalled until the second has seen the lock taken: on a loaded machine
    # the first could otherwise finish before the second has even started its flow.
    first.send_signal(signal.SIGSTOP)
    waiting_log = project.parent / "waiting.err"
    waiting = _iocane_run(project, stderr=waiting_log)
    try:
        _wait_for(lambda: "waiting for the project lock" in waiting_log.read_text(), waiting, 300)
    finally:
        first.send_signal(signal.SIGCONT)
    (code, out, err), (code_w, out_w, _) = _finish(first), _finish(waiting)
    err_w = waiting_log.read_text()
    record_property("faults_injected", 3)
    assert (code, code_w) == (0, 0), err + err_w
    assert "train: resuming" in err
    assert "waiting for the project lock" in err_w and "held by iocane run (pid" in err_w
    killed_by_sigkill, finished, finished_after_waiting = _runs(project)[1:]
    assert killed_by_sigkill.info.status == "KILLED"
    assert "ended without closing the run" in killed_by_sigkill.data.tags["iocane.outcome"]
    assert finished.info.status == finished_after_waiting.info.status == "FINISHED"
    assert finished.data.tags["iocane.previous_attempts"] == killed_by_sigkill.info.run_id
    assert finished.data.tags["iocane.resumed"].startswith("train ")
    assert "iocane.previous_attempts" not in finished_after_waiting.data.tags
    (version,) = _versions(project)  # the same evidence: one version, not two
    assert version.run_id == finished.info.run_id
    assert json.loads(out)["version"] == json.loads(out_w)["version"] == str(version.version)
    assert Layout(project).run_lock.read_text() == "", "the lock is released"
    # Stopped twice, resumed twice: the same model as the same params trained without a break
    # (the reference ran the DVC stages; the flow calls the same functions).
    _assert_same_training(project, reference)
    # A secret in the environment is never logged as a param or a tag.
    for run in _runs(project):
        logged = [*run.data.params.values(), *run.data.tags.values()]
        assert not [value for value in logged if SECRET in value]
