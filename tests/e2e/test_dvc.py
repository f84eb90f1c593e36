"""``dvc repro`` and ``dvc exp run`` on a temporary git copy of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from iocane.base.layout import Layout
from tests.helpers.image_folder import pattern, write_folder, write_image
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.pipeline_params import write_tiny_params


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _git_copy(project: Path) -> tuple[Path, dict[str, str]]:
    """A git repository at ``project`` holding the checkout's tracked files, tiny params, and
    the environment its DVC stages run in."""
    tracked = _run(["git", "ls-files"], PROJECT_ROOT, dict(os.environ)).stdout.split()
    for name in tracked:
        target = project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, target)
    write_tiny_params(project / "params.yaml")
    env = {
        **os.environ,
        # The stages run `python -m iocane.stages`: this interpreter's environment first.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "PYTHONPATH": str(project),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        assert _run(command, project, env).returncode == 0
    return project, env


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return _git_copy(tmp_path_factory.mktemp("dvc") / "project")


def _dvc(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], project, env)


def test_stage_outputs_match_the_layout() -> None:
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    layout = Layout(Path("."))

    def declared(stage: str) -> set[str]:
        entries = [
            entry for key in ("outs", "metrics", "plots") for entry in stages[stage].get(key, [])
        ]
        return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries}

    assert str(layout.prepared_dir) in declared("prepare")
    for stage in ("warmup", "train"):
        assert str(layout.checkpoint_dir(stage)) in declared(stage)
        assert str(layout.metrics_file(stage)) in declared(stage)
        assert str(layout.history_file(stage)) in declared(stage)
    assert {
        str(layout.metrics_file("evaluate")),
        str(layout.report_file),
        str(layout.curves_file),
        str(layout.curves_plot),
        str(layout.examples_plot),
        str(layout.alignment_plot),
    } <= declared("evaluate")
    assert str(layout.metrics_file("gate")) in declared("gate")
    assert {str(layout.registration_file), str(layout.model_card_file)} <= declared("register")
    for name, stage in stages.items():
        assert f"tasks/{name}.py" in stage["deps"], f"{name} must list its own code"
        assert stage["cmd"] == f"python -m iocane.stages {name}", name


def test_dvc_repro_runs_every_stage_and_registers(dvc_project) -> None:
    project, env = dvc_project
    completed = _dvc(project, env, "repro")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for stage in ("prepare", "warmup", "train", "evaluate", "gate", "register"):
        assert f"Running stage '{stage}'" in completed.stdout
    registration = json.loads((project / "reports" / "registration.json").read_text())
    assert registration["gate"] == "passed" and registration["alias"] == "champion"
    # The version names the data as DVC versions it: the prepare output's hash in dvc.lock.
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    (prepared,) = lock["stages"]["prepare"]["outs"]
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version(registration["name"], registration["version"])
    assert version.tags["dvc_data_version"] == prepared["md5"]
    metrics = _dvc(project, env, "metrics", "show", "--json")
    assert metrics.returncode == 0 and "robust_accuracy" in metrics.stdout

    again = _dvc(project, env, "repro")
    assert again.returncode == 0 and "Running stage" not in again.stdout


def test_a_teammate_pulls_data_and_models_from_the_remote(dvc_project, tmp_path: Path) -> None:
    """The team setup: push the prepared data and the models to a DVC remote (a local path
    here; S3 in the README), clone the repository elsewhere, pull, and be up to date."""
    project, env = dvc_project
    remote = tmp_path / "remote"
    assert _dvc(project, env, "remote", "add", "-d", "team", str(remote)).returncode == 0
    for command in (["git", "add", "-A"], ["git", "commit", "-qm", "pipeline and remote"]):
        assert _run(command, project, env).returncode == 0
    pushed = _dvc(project, env, "push")
    assert pushed.returncode == 0, pushed.stderr[-3000:]

    clone = tmp_path / "clone"
    assert _run(["git", "clone", "-q", str(project), str(clone)], tmp_path, env).returncode == 0
    assert not (clone / "data" / "prepared").exists()
    pulled = _dvc(clone, env, "pull")
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    for path in (
        "data/prepared/train_images.npy",
        "data/prepared/meta.json",
        "checkpoints/warmup/model.pt",
        "checkpoints/train/model.pt",
    ):
        assert (clone / path).read_bytes() == (project / path).read_bytes(), path
    status = _dvc(clone, env, "status")
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout


def test_changing_eps_reruns_train_and_what_follows_only(dvc_project) -> None:
    project, env = dvc_project
    completed = _dvc(project, env, "exp", "run", "-S", "train.eps=0.05")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    ran = {line.split("'")[1] for line in completed.stdout.splitlines() if "Running stage" in line}
    assert ran == {"train", "evaluate", "gate", "register"}
    evaluation = json.loads((project / "metrics" / "evaluate.json").read_text())
    assert evaluation["eps"] == pytest.approx(0.05)
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version("iocane-test", "2").tags["eps"] == "0.05"


def _stale_stages(project: Path, env: dict[str, str]) -> set[str]:
    completed = _dvc(project, env, "status", "--json")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return set(json.loads(completed.stdout or "{}"))


@pytest.mark.parametrize(
    ("changes", "stage"),
    [
        ({"warmup": {"optimizer": "adam"}}, "warmup"),
        ({"train": {"optimizer": "adam", "lr": 0.001}}, "train"),
        ({"train": {"budget_minutes": 0.2}}, "train"),
    ],
    ids=["warmup.optimizer", "train.optimizer", "train.budget_minutes"],
)
def test_a_key_a_hand_kept_list_once_missed_makes_its_stage_stale(
    dvc_project, changes: dict, stage: str
) -> None:
    """Issue 29: dvc.yaml listed params key by key and left these out, so `dvc exp run -S
    train.optimizer=adam` reran nothing. A section declared whole keys every one of its keys."""
    project, env = dvc_project
    original = (project / "params.yaml").read_text()
    before = _stale_stages(project, env)
    params = yaml.safe_load(original)
    for section, values in changes.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        # register lists every section but sweep: its MLflow run logs every params key
        assert _stale_stages(project, env) - before == {stage, "register"}
    finally:
        (project / "params.yaml").write_text(original)


def test_failed_gate_stops_the_pipeline_and_registers_nothing(dvc_project) -> None:
    project, env = dvc_project
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["gate"]["min_robust_accuracy"] = 0.99
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    versions_before = len(client.search_model_versions("name = 'iocane-test'"))

    completed = _dvc(project, env, "repro")
    assert completed.returncode != 0
    assert "Running stage 'register'" not in completed.stdout
    verdict = json.loads((project / "metrics" / "gate.json").read_text())
    assert verdict["passed"] is False
    assert any("robust_accuracy" in reason for reason in verdict["reasons"])
    assert len(client.search_model_versions("name = 'iocane-test'")) == versions_before


def test_new_images_in_a_dvc_tracked_folder_rerun_prepare(tmp_path: Path) -> None:
    """The user's image folder under DVC: ``dvc add`` it, and prepare (which depends on
    ``${data.root}``) runs again when images arrive, with a new data fingerprint."""
    project, env = _git_copy(tmp_path / "project")
    images = write_folder(project / "data" / "images", per_class=12, size=(8, 8))
    write_tiny_params(
        project / "params.yaml", data={"dataset": "folder", "root": "data/images", "limit_train": 0}
    )

    def prepare() -> dict:
        completed = _dvc(project, env, "repro", "prepare")
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        assert "Running stage 'prepare'" in completed.stdout
        return json.loads((project / "data" / "prepared" / "meta.json").read_text())

    assert _dvc(project, env, "add", "data/images").returncode == 0
    first = prepare()
    assert "up to date" in _dvc(project, env, "status", "prepare").stdout
    for label, name in enumerate(("cat", "dog")):
        write_image(images / name / "new.png", pattern(label, 99, (8, 8), 3))
    assert _dvc(project, env, "add", "data/images").returncode == 0
    assert "data/images" in _dvc(project, env, "status", "prepare").stdout
    second = prepare()
    assert second["fingerprint"] != first["fingerprint"]
    assert sum(second["counts"].values()) == sum(first["counts"].values()) + 2
