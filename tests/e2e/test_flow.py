"""End to end: the real Prefect flow and the real CLI against a temporary MLflow registry."""

from __future__ import annotations

import base64
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
import torch
from mlflow import MlflowClient
from prefect.client.schemas.objects import State, TaskRun

from iocane.model_files import load_model
from tests.helpers.finite import non_finite_metrics, non_finite_tokens, text_files
from tests.helpers.pipeline_params import CONTRACT_VERSION_TAGS, run_iocane, write_tiny_params
from tests.helpers.prefect_homes import seeded_home
from tests.helpers.readme_blocks import readme_block, substituted
from tests.helpers.registry_files import copy_registry
from tests.helpers.servers import free_port, running_server


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("project")


@pytest.fixture(scope="module")
def env(project: Path, prefect_home_template: Path, empty_registry: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": copy_registry(empty_registry, project),
        "PREFECT_HOME": seeded_home(prefect_home_template, project / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(project / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


@pytest.fixture(scope="module")
def prefect_api(env: dict[str, str]) -> Iterator[None]:
    """One temporary Prefect API for the in-process flow runs of this module; the results
    Prefect caches go to the project's PREFECT_LOCAL_STORAGE_PATH."""
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            if key.startswith(("MLFLOW", "PREFECT")):
                patch.setenv(key, value)
        with prefect_test_harness(server_startup_timeout=120):
            yield


def _run_flow(flow, project: Path, *overrides: str) -> State:
    return flow(
        params_path=str(project / "params.yaml"),
        overrides=list(overrides),
        project_root=str(project),
        return_state=True,
    )


def _task_runs(state: State) -> dict[str, TaskRun]:
    """The flow run's task runs by task name (each task runs once per flow run here)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]})
        )
    return {run.name.rsplit("-", 1)[0]: run for run in runs}


def _state_names(state: State) -> dict[str, str]:
    return {name: run.state_name for name, run in _task_runs(state).items()}


def _live_versions(env: dict[str, str]) -> dict[str, dict[str, str]]:
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    return {
        str(version.version): version.tags
        for version in client.search_model_versions("name='iocane-test'")
    }


PROFILE = {
    "linf": 0.1,
    "l0": 2,
    "corruptions": [3],
    "spatial": {"rotate": 15, "translate": 1, "rotations": 3, "translations": 3},
}


def test_flow_registers_a_gated_champion_with_artifacts(
    project: Path, env: dict[str, str], prefect_api: None
) -> None:
    from prefect.artifacts import Artifact

    from flows.harden import harden

    # The threat profile rides along (cheap members at quick): the training threat from the
    # suite, a sparse one attacked, the corruptions' mean and the spatial grid, one gated.
    write_tiny_params(
        project / "params.yaml",
        evaluate={"threats": PROFILE},
        gate={"min_threat_accuracy": {"corruptions": 0.05}, "min_certified_accuracy": 0.0},
    )
    state = _run_flow(harden, project)
    assert state.is_completed(), state.message
    result = state.result()
    report = Artifact.get("robustness-report")
    table = Artifact.get("robustness-metrics")
    figures = [
        Artifact.get(key)
        for key in (
            "robustness-curves",
            "adversarial-examples",
            "perceptual-alignment",
            "threat-profile",
        )
    ]
    verdict = Artifact.get("gate-verdict")
    run_link, version_link = (Artifact.get(key) for key in ("mlflow-run", "registered-version"))

    assert result["gate"] == "passed" and result["alias"] == "champion"
    evaluation = json.loads((project / "metrics" / "evaluate.json").read_text())
    assert {"clean_accuracy", "robust_accuracy", "attacks"} <= set(evaluation)
    assert evaluation["robust_accuracy"] <= min(evaluation["attacks"].values())
    assert evaluation["robust_accuracy"] <= evaluation["clean_accuracy"]
    threats = evaluation["threats"]
    assert set(threats) == set(PROFILE)  # the file's keys are sorted (iocane.base.files)
    assert threats["linf"]["hardened"] == evaluation["robust_accuracy"]  # not attacked twice
    assert (
        threats["l0"]["budget_text"] == "2 pixels" and threats["corruptions"]["measure"] == "mean"
    )
    for threat in threats.values():
        assert 0 <= threat["hardened"] <= evaluation["clean_accuracy"] + 1e-9
        assert threat["natural"] is not None and threat["members"]["hardened"]
    gate = json.loads((project / "metrics" / "gate.json").read_text())
    assert "threat_corruptions" in [check["name"] for check in gate["checks"]]
    # The certified band (IBP, the tiny params'): proven below measured, none broken.
    band = evaluation["certified"]
    assert list(band["bounds"]) == ["ibp"] and band["broken_certified"] == 0
    assert band["certified_accuracy"] <= band["attacked_accuracy"] == evaluation["robust_accuracy"]
    assert "certified" in [check["name"] for check in gate["checks"]]

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias("iocane-test", "champion")
    assert str(version.version) == result["version"] == "1"
    tags = version.tags
    for key in CONTRACT_VERSION_TAGS:
        assert key in tags, key
    assert tags["gate"] == "passed" and tags["threat_model"] == "Linf"
    assert float(tags["robust_accuracy"]) == pytest.approx(evaluation["robust_accuracy"], abs=1e-6)
    assert tags["data_fingerprint"] == result["data_fingerprint"]
    assert tags["suite_preset"] == "quick" and tags["dvc_data_version"].endswith(".dir")
    assert json.loads(tags["params"])["train"]["eps"] == 0.1
    assert tags["model_card_uri"] == f"runs:/{version.run_id}/reports/model_card.md"
    assert tags["champion_action"] == "registered" and tags["champion_by"]
    training = json.loads((project / "metrics" / "train.json").read_text())
    assert tags["train_method"] == "pgd"
    assert tags["checkpoint"] == f"best: epoch {training['selected_epoch']} of 2"
    # The model card is the version's description, and an artifact of its run.
    assert version.description.startswith("# Model card: iocane-test v1")
    assert tags["certified_accuracy"] == f"{band['certified_accuracy']:.6f}"
    assert tags["certified_band"].endswith(f"-{evaluation['robust_accuracy']:.4f}")
    sections = ("Intended use", "Threat model", "Training recipe", "What is proven", "Known limits")
    for section in sections:
        assert f"## {section}" in version.description

    run = client.get_run(version.run_id)
    assert run.data.metrics["robust_accuracy"] == pytest.approx(evaluation["robust_accuracy"])
    for name, threat in threats.items():
        assert run.data.metrics[f"threat_accuracy/{name}"] == pytest.approx(threat["hardened"])
        assert run.data.metrics[f"natural/threat_accuracy/{name}"] == pytest.approx(
            threat["natural"]
        )
    assert run.data.metrics["certified_accuracy/ibp"] == pytest.approx(band["certified_accuracy"])
    assert run.data.params["train.eps"] == "0.1"
    history = client.get_metric_history(version.run_id, "train/val_adv_accuracy")
    assert [point.step for point in history] == [1, 2]
    artifacts = {item.path for item in client.list_artifacts(version.run_id)}
    assert {"metrics", "plots", "reports", "weights", "data"} <= artifacts
    reports = {item.path for item in client.list_artifacts(version.run_id, "reports")}
    assert {"reports/robustness.md", "reports/model_card.md"} <= reports
    plots = {item.path for item in client.list_artifacts(version.run_id, "plots")}
    assert {
        "plots/robustness_curves.png",
        "plots/adversarial_examples.png",
        "plots/perceptual_alignment.png",
        "plots/threat_profile.png",
    } <= plots
    assert version.tags["alignment_uri"].endswith("plots/perceptual_alignment.png")
    assert version.tags["threat_profile_uri"].endswith("plots/threat_profile.png")
    # The logged model states what serving it needs: torch (a torch.export program).
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    requirements = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{logged.artifact_location}/requirements.txt"
    )
    assert f"torch=={torch.__version__.split('+')[0]}" in Path(requirements).read_text().split()
    cost = {key: value for key, value in run.data.metrics.items() if key.startswith("cost/")}
    assert cost["cost/hours"] > 0 and cost["cost/train_backward_passes"] > 0
    curves = json.loads((project / "plots" / "robustness_curves.json").read_text())
    assert set(curves) == {"Linf", "L2"}
    assert curves["Linf"]["hardened"][0] == pytest.approx(evaluation["clean_accuracy"], abs=0.1)

    assert report is not None and "Robustness report" in report.data
    assert "Gate: passed" in report.data
    assert table is not None and "robust_accuracy" in str(table.data)
    assert "certified_accuracy/ibp" in str(table.data) and "## What is proven" in report.data
    # The figures travel inside the artifacts: the Prefect UI needs no access to local files.
    assert "](../plots/" not in report.data and "](data:image/png;base64," in report.data
    for figure in figures:
        assert figure is not None and figure.type == "image"
        assert figure.data.startswith("data:image/png;base64,")
        png = base64.b64decode(figure.data.split(",", 1)[1])
        assert png.startswith(b"\x89PNG")

    assert verdict is not None and "Gate: passed" in verdict.data
    assert "| robust_accuracy |" in verdict.data
    # Link artifacts are stored as markdown links.
    assert run_link is not None and f"/runs/{version.run_id})" in run_link.data
    assert version_link is not None and "/#/models/iocane-test/versions/1)" in version_link.data

    checkpoint_dir = project / "checkpoints" / "train"
    checkpoint = torch.load(checkpoint_dir / "epoch-0002.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "rng"} <= set(checkpoint)
    assert checkpoint["epoch"] == 2
    # Nothing the run wrote holds a non-finite number: no file, no MLflow metric (issue 19).
    assert len(text_files(project)) >= 10
    assert non_finite_tokens(project) == []
    non_finite, read = non_finite_metrics(client)
    assert read > 20 and non_finite == []


CACHED_STAGES = ("prepare", "warmup", "train", "evaluate", "gate")


def test_an_unchanged_rerun_comes_from_the_cache(
    project: Path, env: dict[str, str], prefect_api: None
) -> None:
    from flows.harden import harden

    state = _run_flow(harden, project)
    assert state.is_completed(), state.message
    names = _state_names(state)
    assert {stage: names[stage] for stage in CACHED_STAGES} == dict.fromkeys(
        CACHED_STAGES, "Cached"
    )
    # The registry knows this evidence already: the same version, nothing registered twice.
    assert names["register"] == "Completed" and state.result()["version"] == "1"
    assert list(_live_versions(env)) == ["1"]


def test_a_training_failure_fails_the_run_and_the_rerun_resumes(
    project: Path,
    env: dict[str, str],
    prefect_api: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import iocane.training.checkpoints
    from flows.harden import harden

    save = iocane.training.checkpoints.save_checkpoint

    def fail_at_epoch_2(path: Path, checkpoint: dict) -> None:
        if path.name == "epoch-0002.pt":
            raise OSError("injected: no space left on device")
        save(path, checkpoint)

    monkeypatch.setattr(iocane.training.checkpoints, "save_checkpoint", fail_at_epoch_2)
    failed = _run_flow(harden, project, "train.eps=0.05")
    assert failed.is_failed()
    assert "no space left on device" in failed.message
    names = _state_names(failed)
    assert names["prepare"] == names["warmup"] == "Cached"
    assert names["train"] == "Failed" and "register" not in names
    assert _task_runs(failed)["train"].run_count == 1, "training is not retried blindly"
    assert list(_live_versions(env)) == ["1"]
    assert (project / "checkpoints" / "train" / "epoch-0001.pt").exists()

    monkeypatch.setattr(iocane.training.checkpoints, "save_checkpoint", save)
    with caplog.at_level(logging.INFO, logger="iocane"):
        rerun = _run_flow(harden, project, "train.eps=0.05")
    assert rerun.is_completed(), rerun.message
    assert "train: resuming after epoch 1" in caplog.text
    names = _state_names(rerun)
    assert names["prepare"] == names["warmup"] == "Cached"
    assert names["train"] == names["evaluate"] == names["gate"] == "Completed"
    versions = _live_versions(env)
    assert len(versions) == 2 and versions[rerun.result()["version"]]["eps"] == "0.05"


def test_a_flaky_registry_call_is_retried_from_a_clean_start(
    project: Path, env: dict[str, str], prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.harden import harden

    before = _live_versions(env)
    set_tag = MlflowClient.set_model_version_tag
    calls = []

    def drop_the_first_call(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise requests.exceptions.ConnectionError("injected: connection reset by the server")
        return set_tag(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", drop_the_first_call)
    state = _run_flow(harden, project, "train.eps=0.05", "gate.min_clean_accuracy=0.31")
    assert state.is_completed(), state.message
    names = _state_names(state)
    assert names["train"] == "Cached" and names["gate"] == "Completed"
    assert _task_runs(state)["register"].run_count == 2
    after = _live_versions(env)
    # The first attempt's version was deleted; the retry registered one complete version.
    (new,) = set(after) - set(before)
    assert new == state.result()["version"] and "evidence_key" in after[new]
    assert all("evidence_key" in tags for tags in after.values())


def test_a_failing_registry_call_fails_the_run_and_registers_nothing(
    project: Path, env: dict[str, str], prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.harden import harden

    before = _live_versions(env)

    def refuse(self, *args, **kwargs):
        raise RuntimeError("injected: the registry refused the description")

    monkeypatch.setattr(MlflowClient, "update_model_version", refuse)
    state = _run_flow(harden, project, "train.eps=0.05", "gate.min_clean_accuracy=0.32")
    assert state.is_failed()
    assert "the registry refused the description" in state.message
    assert _task_runs(state)["register"].run_count == 1, "not a transient error: no retry"
    assert _live_versions(env) == before
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("iocane-test")
    (latest,) = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    assert latest.info.status == "FAILED"


def test_cli_failed_gate_registers_without_promoting(
    project: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The model trained and evaluated at eps 0.05 above (the project's params.yaml, with its
    # threat profile): only the gate and the registration run again.
    params = write_tiny_params(
        project / "strict.yaml",
        gate={"min_robust_accuracy": 0.99},
        train={"eps": 0.05},
        evaluate={"threats": PROFILE},
    )
    completed = run_iocane(project, env, "run", "--params", str(params))
    assert completed.returncode == 3, completed.stderr[-2000:]
    assert "gate FAILED" in completed.stderr
    for stage in ("prepare", "warmup", "train", "evaluate"):
        assert f"Task run '{stage}-" in completed.stderr
    assert completed.stderr.count("Finished in state Cached") == 4, completed.stderr[-3000:]
    gate = json.loads((project / "metrics" / "gate.json").read_text())
    assert gate["passed"] is False and any("robust_accuracy" in r for r in gate["reasons"])

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    number = json.loads(completed.stdout)["version"]
    failed = client.get_model_version("iocane-test", number)
    assert failed.tags["gate"] == "failed" and failed.aliases == []
    assert str(client.get_model_version_by_alias("iocane-test", "champion").version) == "1"

    # promote and review in process: the same main() as the command, without its start-up.
    from iocane.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.chdir(project)
    capsys.readouterr()
    assert main(["promote", "--name", "iocane-test", "--version", number]) == 3
    assert "refused" in capsys.readouterr().err
    assert str(client.get_model_version_by_alias("iocane-test", "champion").version) == "1"

    assert main(["review", "--name", "iocane-test", "--json"]) == 0
    review = json.loads(capsys.readouterr().out)
    listed = [(row["version"], row["gate"], row["aliases"]) for row in review["versions"]]
    assert listed[0] == (int(number), "failed", "") and listed[-1] == (1, "passed", "champion")
    assert "champion v1" in review["comparison"]["summary"]
    # what each version cost, and what it bought per hour (iocane/reports/costs.py)
    for row in review["versions"]:
        assert row["hours"] > 0 and row["gain_per_hour"] is not None
    assert main(["review", "--name", "iocane-test"]) == 0
    assert "gain_per_hour" in capsys.readouterr().out


def test_cli_evaluates_the_registered_champion(project: Path, env: dict[str, str]) -> None:
    uri = "models:/iocane-test@champion"
    params = str(project / "params.yaml")
    completed = run_iocane(project, env, "evaluate", "--model-uri", uri, "--params", params)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout)
    assert result["version"] == "1"
    assert result["robust_accuracy"] <= min(result["attacks"].values())
    assert result["robust_accuracy"] <= result["clean_accuracy"]
    report = project / "reports" / "evaluations" / "iocane-test-v1" / "reports" / "robustness.md"
    assert "Robustness report" in report.read_text()

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version("iocane-test", "1")
    assert version.tags["reevaluated_robust_accuracy"] == f"{result['robust_accuracy']:.6f}"
    # It certifies what it can: the registered version's own network, bounded by IBP.
    band = result["certified"]
    assert band["unsupported"] is None and band["broken_certified"] == 0
    assert version.tags["reevaluated_certified_band"].endswith(f"-{result['robust_accuracy']:.4f}")
    (evaluation,) = client.list_artifacts(version.run_id, "evaluations")
    logged = {
        item.path.rsplit("/", 1)[-1]
        for item in client.list_artifacts(version.run_id, evaluation.path)
    }
    assert {"evaluate.json", "robustness.md", "robustness_curves.png"} <= logged


def test_the_champion_in_use_is_loaded_served_and_traced_to_its_evidence(
    project: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's "Use the champion" blocks as written (the model's name, the port and the
    path of .venv aside): ``mlflow models serve`` in a process group of its own, offline (no
    conda on PATH, no package index, other hosts refused), and the Python block that
    loads the champion, reads its evidence and asks the server. Then what the README only
    prints is checked: the served logits are the registered version's, which are those of the
    weights its run evaluated, and the version's tags are that run's evidence."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    port = free_port()
    names = {"iocane-digits": "iocane-test", "5001": str(port)}
    activate = f"source {shlex.quote(str(Path(sys.prefix) / 'bin' / 'activate'))}"
    serve = substituted(
        readme_block("serve-champion"), {**names, "source .venv/bin/activate": activate}
    )
    offline = {
        **env,
        "PATH": "/usr/bin:/bin",  # no conda; the README's activation puts the environment first
        "PIP_NO_INDEX": "1",
        "HTTP_PROXY": "http://127.0.0.1:9",  # any other host: refused
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    # As in a fresh Python of the user's: the registry from the environment, no global set.
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    url = f"http://127.0.0.1:{port}"
    with running_server(["bash", "-c", serve], offline, project, f"{url}/ping"):
        block: dict = {}
        exec(compile(substituted(readme_block("use-champion"), names), "README", "exec"), block)
        example_file = mlflow.artifacts.download_artifacts(
            "models:/iocane-test@champion/serving_input_example.json"
        )
        example_reply = requests.post(
            f"{url}/invocations",
            data=Path(example_file).read_bytes(),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        too_small = {"inputs": block["images"][:, :, :4].tolist()}
        refused = requests.post(f"{url}/invocations", json=too_small, timeout=60)

    images, logits, version = block["images"], block["logits"], block["version"]
    assert images.shape == (8, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert logits.shape == (8, 10)
    torch.testing.assert_close(block["served"], logits, atol=1e-5, rtol=0)
    assert str(version.version) == "1" and version.tags["gate"] == "passed"

    # The logged model: a signature, and two real test images as its input example.
    info = mlflow.models.get_model_info("models:/iocane-test@champion")
    (taken,), (given,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert (taken.type, taken.shape) == (np.dtype(np.float32), (-1, 1, 8, 8))
    assert (given.type, given.shape) == (np.dtype(np.float32), (-1, 10))
    example = np.asarray(json.loads(Path(example_file).read_text())["inputs"], np.float32)
    np.testing.assert_array_equal(example, np.load(project / "data/prepared/test_images.npy")[:2])
    assert example_reply.status_code == 200, example_reply.text
    model = block["model"]
    with torch.no_grad():
        expected = model(torch.from_numpy(example))
    served_example = torch.tensor(example_reply.json()["predictions"])
    torch.testing.assert_close(served_example, expected, atol=1e-5, rtol=0)
    assert refused.status_code == 400, refused.text
    assert "does not match expected shape (-1, 1, 8, 8)" in refused.json()["message"]

    # The served model is the version's run's evaluated weights, and its tags that run's evidence.
    weights, _ = load_model(
        Path(mlflow.artifacts.download_artifacts(f"runs:/{version.run_id}/weights/model.pt"))
    )
    with torch.no_grad():
        torch.testing.assert_close(weights(images), logits, atol=1e-5, rtol=0)
    evaluation = _run_json(version.run_id, "metrics/evaluate.json")
    meta = _run_json(version.run_id, "data/meta.json")
    params = MlflowClient().get_run(version.run_id).data.params
    assert float(version.tags["robust_accuracy"]) == pytest.approx(evaluation["robust_accuracy"])
    assert version.tags["data_fingerprint"] == meta["fingerprint"]
    assert version.tags["threat_model"] == params["train.norm"] == "Linf"
    assert version.tags["eps"] == params["train.eps"] == "0.1"
    assert version.source == f"models:/{info.model_id}" and version.tags["run_id"] == info.run_id


def _run_json(run_id: str, path: str) -> dict:
    """A JSON file the run logged as an artifact."""
    return json.loads(
        Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{path}")).read_text()
    )


def test_cli_refuses_an_unknown_alias_with_exit_2(
    project: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from iocane.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.chdir(project)
    assert main(["evaluate", "--model-uri", "models:/iocane-test@nosuch"]) == 2
    assert "no registered model" in capsys.readouterr().err


def test_reharden_stops_on_unchanged_data_and_hardens_on_new_data(
    project: Path, env: dict[str, str], prefect_api: None
) -> None:
    from prefect.artifacts import Artifact

    from flows.harden import reharden

    unchanged = _run_flow(reharden, project)
    assert unchanged.is_completed(), unchanged.message
    result = unchanged.result()
    assert result["status"] == "unchanged" and "v1 (champion)" in result["reason"]
    assert set(_state_names(unchanged)) == {"prepare", "champion-data"}
    decision = Artifact.get("reharden-decision")
    assert decision is not None and "data unchanged" in decision.data

    before = _live_versions(env)
    # New data (another training subset); a strict gate keeps champion where it is.
    changed = _run_flow(reharden, project, "data.limit_train=500", "gate.min_robust_accuracy=0.99")
    assert changed.is_completed(), changed.message
    result = changed.result()
    assert result["status"] == "rehardened" and "data changed" in result["reason"]
    assert result["gate"] == "failed"
    (new,) = set(_live_versions(env)) - set(before)
    assert new == result["version"]
    assert result["data_fingerprint"] != before["1"]["data_fingerprint"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.eps=-0.1"], "train.eps"),
        (["--set", "train.nonsense=1"], "unknown key train.nonsense"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    params = write_tiny_params(tmp_path / "params.yaml")
    isolated = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    completed = run_iocane(tmp_path, isolated, "run", "--params", str(params), *args)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert message in completed.stderr
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("overrides", "reran"),
    [
        (("train.optimizer=adam", "train.lr=0.001"), "train"),
        (("warmup.optimizer=adam",), "warmup"),
    ],
    ids=["train.optimizer", "warmup.optimizer"],
)
def test_a_changed_optimizer_trains_again_and_registers_a_new_version(
    project: Path,
    env: dict[str, str],
    prefect_api: None,
    overrides: tuple[str, ...],
    reran: str,
) -> None:
    """Issue 29: with the optimizer missing from the stage's key, this run was `Cached` from the
    first one and returned version 1, with the first run's weights."""
    from flows.harden import harden

    before = _live_versions(env)
    state = _run_flow(harden, project, *overrides)
    assert state.is_completed(), state.message
    names = _state_names(state)
    assert names[reran] == "Completed", names
    assert names["prepare"] == "Cached"
    assert state.result()["version"] not in before
