"""The Prefect artifacts' pieces: the metrics table, the verdict, inlined figures, the MLflow UI
address, and the task that publishes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iocane.base.layout import Layout
from iocane.reports.artifacts import (
    inline_images,
    metrics_table,
    mlflow_ui_url,
    png_data_url,
    verdict_markdown,
)


@dataclass
class _Version:
    name: str = "iocane-digits"
    version: str = "3"
    alias: str | None = None
    run_id: str = "r1"
    gate: str = "failed"
    reason: str = "the gate failed"
    experiment_id: str = "1"


def test_metrics_table_shows_attacks_only_the_hardened_model_faced() -> None:
    evaluation = {
        "clean_accuracy": 0.9,
        "robust_accuracy": 0.6,
        "attacks": {"pgd": 0.6, "transfer": 0.8},
        "natural": {"clean_accuracy": 0.95, "robust_accuracy": 0.0, "attacks": {"pgd": 0.0}},
    }
    rows = metrics_table(evaluation)
    assert {"metric": "robust_accuracy/transfer", "hardened": 0.8, "natural": None} in rows
    assert {"metric": "robust_accuracy/pgd", "hardened": 0.6, "natural": 0.0} in rows


def test_verdict_says_what_failed_and_what_the_registry_did() -> None:
    verdict = {
        "passed": False,
        "checks": [
            {
                "name": "robust_accuracy",
                "value": 0.1,
                "rule": ">=",
                "threshold": 0.5,
                "passed": False,
            }
        ],
        "reasons": ["robust_accuracy = 0.1000, required >= 0.5000"],
    }
    text = verdict_markdown(verdict, _Version())
    assert text.startswith("## Gate: FAILED")
    assert "| robust_accuracy | 0.1000 | >= | 0.5000 | NO |" in text
    assert "Registered **iocane-digits v3** (alias: none; the gate failed)." in text


def test_report_figures_are_inlined_as_data_urls(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    for plot in layout.evaluation_plots:
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot.write_bytes(b"\x89PNG\r\n\x1a\n")
    markdown = inline_images(f"![curves](../plots/{layout.curves_plot.name})", layout)
    assert markdown == f"![curves]({png_data_url(layout.curves_plot)})"
    assert markdown.startswith("![curves](data:image/png;base64,")


def test_mlflow_ui_address(monkeypatch) -> None:
    monkeypatch.delenv("IOCANE_MLFLOW_UI_URL", raising=False)
    assert mlflow_ui_url("sqlite:///mlflow.db") == "http://127.0.0.1:5000"
    assert mlflow_ui_url("http://mlflow:5000/") == "http://mlflow:5000"
    monkeypatch.setenv("IOCANE_MLFLOW_UI_URL", "https://ui.example/")
    assert mlflow_ui_url("http://mlflow:5000") == "https://ui.example"


def test_the_publish_task_keeps_its_name_and_is_never_cached() -> None:
    from prefect.cache_policies import NO_CACHE

    from tasks.prefect_tasks import publish_report_task

    assert publish_report_task.name == "publish-report"
    assert publish_report_task.cache_policy is NO_CACHE
