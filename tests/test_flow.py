"""End to end: the real Prefect flow and the real CLI against a temporary MLflow registry."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from .pipeline_params import CONTRACT_VERSION_TAGS, run_iocane, write_tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("project")


@pytest.fixture(scope="module")
def env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "PREFECT_HOME": str(project / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(project / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def test_flow_registers_a_gated_champion_with_artifacts(
    project: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.artifacts import Artifact
    from prefect.testing.utilities import prefect_test_harness

    for key, value in env.items():
        if key.startswith(("MLFLOW", "PREFECT")):
            monkeypatch.setenv(key, value)
    params = write_tiny_params(project / "params.yaml")
    from flows.harden import harden

    with prefect_test_harness(server_startup_timeout=120):
        result = harden(params_path=str(params), project_root=str(project))
        report = Artifact.get("robustness-report")
        table = Artifact.get("robustness-metrics")
        figures = [Artifact.get(key) for key in ("robustness-curves", "adversarial-examples")]

    assert result["gate"] == "passed" and result["alias"] == "champion"
    evaluation = json.loads((project / "metrics" / "evaluate.json").read_text())
    assert {"clean_accuracy", "robust_accuracy", "attacks"} <= set(evaluation)
    assert evaluation["robust_accuracy"] <= min(evaluation["attacks"].values())
    assert evaluation["robust_accuracy"] <= evaluation["clean_accuracy"]

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
    # The model card is the version's description, and an artifact of its run.
    assert version.description.startswith("# Model card: iocane-test v1")
    for section in ("Intended use", "Threat model", "Training recipe", "Known limits"):
        assert f"## {section}" in version.description

    run = client.get_run(version.run_id)
    assert run.data.metrics["robust_accuracy"] == pytest.approx(evaluation["robust_accuracy"])
    assert run.data.params["train.eps"] == "0.1"
    history = client.get_metric_history(version.run_id, "train/val_adv_accuracy")
    assert [point.step for point in history] == [1, 2]
    artifacts = {item.path for item in client.list_artifacts(version.run_id)}
    assert {"metrics", "plots", "reports", "weights", "data"} <= artifacts
    reports = {item.path for item in client.list_artifacts(version.run_id, "reports")}
    assert {"reports/robustness.md", "reports/model_card.md"} <= reports
    plots = {item.path for item in client.list_artifacts(version.run_id, "plots")}
    assert {"plots/robustness_curves.png", "plots/adversarial_examples.png"} <= plots
    curves = json.loads((project / "plots" / "robustness_curves.json").read_text())
    assert set(curves) == {"Linf", "L2"}
    assert curves["Linf"]["hardened"][0] == pytest.approx(evaluation["clean_accuracy"], abs=0.1)

    assert report is not None and "Robustness report" in report.data
    assert "Gate: passed" in report.data
    assert table is not None and "robust_accuracy" in str(table.data)
    # The figures travel inside the artifacts: the Prefect UI needs no access to local files.
    assert "](../plots/" not in report.data and "](data:image/png;base64," in report.data
    for figure in figures:
        assert figure is not None and figure.type == "image"
        assert figure.data.startswith("data:image/png;base64,")
        png = base64.b64decode(figure.data.split(",", 1)[1])
        assert png.startswith(b"\x89PNG")

    checkpoint_dir = project / "checkpoints" / "train"
    import torch

    checkpoint = torch.load(checkpoint_dir / "epoch-0002.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "rng"} <= set(checkpoint)
    assert checkpoint["epoch"] == 2


def test_cli_failed_gate_registers_without_promoting(project: Path, env: dict[str, str]) -> None:
    params = write_tiny_params(project / "strict.yaml", gate={"min_robust_accuracy": 0.99})
    completed = run_iocane(project, env, "run", "--params", str(params))
    assert completed.returncode == 3, completed.stderr[-2000:]
    assert "gate FAILED" in completed.stderr
    gate = json.loads((project / "metrics" / "gate.json").read_text())
    assert gate["passed"] is False and any("robust_accuracy" in r for r in gate["reasons"])

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    failed = client.get_model_version("iocane-test", "2")
    assert failed.tags["gate"] == "failed" and failed.aliases == []
    assert str(client.get_model_version_by_alias("iocane-test", "champion").version) == "1"

    refused = run_iocane(project, env, "promote", "--name", "iocane-test", "--version", "2")
    assert refused.returncode == 3 and "refused" in refused.stderr
    assert str(client.get_model_version_by_alias("iocane-test", "champion").version) == "1"

    review = run_iocane(project, env, "review", "--name", "iocane-test", "--json")
    assert review.returncode == 0, review.stderr[-2000:]
    rows = json.loads(review.stdout)["versions"]
    assert [(row["version"], row["gate"], row["aliases"]) for row in rows] == [
        (2, "failed", ""),
        (1, "passed", "champion"),
    ]
    table = run_iocane(project, env, "review", "--name", "iocane-test")
    assert "no champion/challenger pair to compare (champion v1)" in table.stdout

    lone = run_iocane(project, env, "promote", "--name", "iocane-test", "--rollback")
    assert lone.returncode == 3 and "no earlier one" in lone.stderr


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
    (evaluation,) = client.list_artifacts(version.run_id, "evaluations")
    logged = {
        item.path.rsplit("/", 1)[-1]
        for item in client.list_artifacts(version.run_id, evaluation.path)
    }
    assert {"evaluate.json", "robustness.md", "robustness_curves.png"} <= logged

    missing = run_iocane(project, env, "evaluate", "--model-uri", "models:/iocane-test@nosuch")
    assert missing.returncode == 2 and "no registered model" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.eps=-0.1"], "train.eps"),
        (["--set", "train.nonsense=1"], "unknown key train.nonsense"),
        (
            ["--set", "data.dataset=fashion_mnist", "--set", "data.root=/no/such/dir"],
            "/no/such/dir",
        ),
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
