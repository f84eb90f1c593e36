"""Usage errors the CLI catches before it starts any work (in process: no Prefect, no MLflow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iocane.cli import main
from tests.helpers.pipeline_params import write_tiny_params


@pytest.fixture
def params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    return str(write_tiny_params(tmp_path / "params.yaml"))


def test_serve_refuses_a_bad_cron(params: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--params", params, "--cron", "61 * * * *"]) == 2
    assert "'61 * * * *' is not a cron expression" in capsys.readouterr().err


def test_serve_needs_a_prefect_server(
    params: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["serve", "--params", params, "--cron", "0 3 * * 1"]) == 2
    assert "needs a Prefect server" in capsys.readouterr().err


def test_run_refuses_a_missing_data_directory_before_any_work(
    params: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--set", "data.dataset=fashion_mnist", "--set", "data.root=/no/such/dir"]
    assert main(["run", "--params", params, *args]) == 2
    assert "/no/such/dir (data.root) does not exist" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".iocane").exists()
