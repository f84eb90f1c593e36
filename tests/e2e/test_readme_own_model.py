"""The README's "Harden your own model" commands, run literally as the README prints them.

A new user's project: a folder of real PNG and JPEG files of two sizes (28 and 36 pixels, so
some are scaled up and some down to the 32 pixels the model was trained at), a torchvision
ResNet-18 the user trained on it with ImageNet normalisation, and this project's params.yaml and
configs/own_model.yaml. The commands come from the README's blocks marked
``<!-- readme-test: own-model-evaluate -->`` and ``own-model-run`` (tests/helpers/readme_blocks.py);
the test adds only the settings the README says it adds (SPEED), then checks what the README says
they print: the user's figure, and a hardening that passes the gate relative to the user's model
(exit 0) at configs/own_model.yaml's eps of 8/255.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image

from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.prefect_homes import seeded_home
from tests.helpers.readme_blocks import readme_block
from tests.helpers.user_pipeline import train_user_model, user_accuracy, write_user_folder

pytestmark = [pytest.mark.slow]

BLOCKS = ("own-model-evaluate", "own-model-run")

# What the README says the test adds to each command, to finish in minutes. 10 epochs of the
# folder's 28 training images are 10 optimizer steps: enough to harden the user's model here.
# configs/own_model.yaml's threat profile runs once, in ``evaluate``: in ``run`` it would run
# twice more on a ResNet-18 (the natural and the hardened model), and nothing here reads it.
SPEED = {
    "evaluate": ["--set", "evaluate.preset=quick"],
    "run": [
        "--set",
        "evaluate.preset=quick",
        "--set",
        "train.epochs=10",
        "--set",
        "evaluate.threats={}",
    ],
}
EPS = 8 / 255  # configs/own_model.yaml's train.eps, rounded there to 0.0314
RELATIVE_CHECKS = ("clean_drop", "robust_gain", "trust_flags")


def readme_commands() -> list[list[str]]:
    """The commands of the README's two marked blocks (``own-model-evaluate``, ``own-model-run``),
    each split as a shell splits it (backslash continuations joined)."""
    commands = []
    for name in BLOCKS:
        block = readme_block(name).replace("\\\n", " ")
        commands += [shlex.split(line) for line in block.splitlines() if line.strip()]
    return commands


def test_readme_commands_name_what_a_real_folder_and_model_need() -> None:
    """The commands themselves, before anything runs: they are the two the README promises."""
    commands = readme_commands()
    assert [command[:2] for command in commands] == [["iocane", "evaluate"], ["iocane", "run"]]
    for command in commands:
        assert command[2:4] == ["--params", "configs/own_model.yaml"]
        assert "data.root=images" in command and "data.image_size=32" in command
    # The README says what the test adds: all of it, and nothing else.
    readme = (PROJECT_ROOT / "README.md").read_text()
    for added in {value for values in SPEED.values() for value in values if value != "--set"}:
        assert f"`--set {added}`" in readme, added


def _run(argv: list[str], project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=project, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def test_readme_commands_run_as_printed(tmp_path: Path, prefect_home_template: Path) -> None:
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "params.yaml", project / "params.yaml")
    shutil.copy(PROJECT_ROOT / "configs" / "own_model.yaml", project / "configs")
    images = write_user_folder(project / "images")
    users_model = train_user_model(images, project / "model.pt", "resnet18")
    users_accuracy = user_accuracy(users_model, images / "test")
    # Well above chance, and a figure that another normalisation would change: iocane matching
    # it below shows it feeds the model the pixels the user's pipeline does.
    assert users_accuracy > 0.75, f"the user's model scored {users_accuracy}"
    unnormalised = user_accuracy(users_model, images / "test", normalize=False)
    assert unnormalised != users_accuracy, "the figure does not tell normalisations apart"
    env = {
        **os.environ,
        # The installed console script, as the user types it.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "PREFECT_HOME": seeded_home(prefect_home_template, project / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(project / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    evaluate, run = readme_commands()

    completed = _run(evaluate + SPEED["evaluate"], project, env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout)
    assert figures["natural"] is None and "pgd" in figures["attacks"]
    assert figures["eps"] == pytest.approx(EPS, abs=1e-4)
    # iocane sees the user's images as the user's own pipeline did: the same clean accuracy on
    # the same test images (every one of them: the test split is the folder's test/).
    test_files = [path for path in (images / "test").rglob("*") if path.is_file()]
    assert figures["n_samples"] == len(test_files)
    assert figures["clean_accuracy"] == pytest.approx(users_accuracy, abs=1e-6)
    assert 0 <= figures["robust_accuracy"] <= figures["clean_accuracy"]
    # configs/own_model.yaml's threat profile at 32x32 RGB (linf: null, not run again).
    assert set(figures["threats"]) == {"l0", "patch", "corruptions", "spatial"}
    assert all(0 <= threat["hardened"] <= 1 for threat in figures["threats"].values())
    meta = json.loads((project / "data" / "prepared" / "meta.json").read_text())
    small = sum(min(Image.open(path).size) < 32 for path in images.rglob("*") if path.is_file())
    assert small > 0 and meta["image_size"] == 32 and meta["resized_up_images"] == small
    assert f"folder: scaled up {small} image(s) smaller than data.image_size 32" in completed.stderr

    completed = _run(run + SPEED["run"], project, env)
    # A faithful hardening passes the gate relative to the user's model: exit 0.
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    summary = json.loads(completed.stdout)
    assert set(summary) >= {"gate", "reasons", "clean_accuracy", "robust_accuracy", "version"}
    assert summary["registered_model"] == "iocane-images"  # the folder's name, not digits'
    assert summary["gate"] == "passed" and summary["reasons"] == []
    verdict = json.loads((project / "metrics" / "gate.json").read_text())
    # The gate of configs/own_model.yaml: relative to the user's model, no absolute floor.
    assert [check["name"] for check in verdict["checks"]] == list(RELATIVE_CHECKS)
    assert all(check["passed"] for check in verdict["checks"])
    evaluation = json.loads((project / "metrics" / "evaluate.json").read_text())
    natural = evaluation["natural"]
    assert evaluation["eps"] == pytest.approx(EPS, abs=1e-4)
    assert natural["clean_accuracy"] == pytest.approx(users_accuracy, abs=1e-6)
    # The user's model is not robust at that eps; the hardened one is, and stays as clean.
    assert summary["robust_accuracy"] >= natural["robust_accuracy"] + 0.5, (natural, summary)
    assert summary["clean_accuracy"] >= natural["clean_accuracy"] - 0.1
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    (version,) = client.search_model_versions("name='iocane-images'")
    assert version.tags["gate"] == "passed"
    assert version.tags["base_model"].startswith("model.pt (sha256 ")
    assert client.search_registered_models() == [client.get_registered_model("iocane-images")]
