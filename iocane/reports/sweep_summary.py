"""The sweep's summary: the points as a CSV table and a markdown table in the order of their
rank, written beside the clean-versus-robust plot with its Pareto front (``summary.csv``,
``summary.md``, ``pareto.png`` in the sweep's directory), and shown in the Prefect UI as the
artifacts ``sweep-summary`` and ``sweep-pareto``. Its Prefect task (``sweep-summary``) is in
``tasks.prefect_tasks``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from prefect.artifacts import create_image_artifact, create_markdown_artifact

from iocane.base.files import write_text
from iocane.pipeline.sweep.ranking import rank
from iocane.reports.artifacts import png_data_url
from iocane.reports.sweep_figures import plot_front

SUMMARY_COLUMNS = (
    "rank",
    "point",
    "model",
    "eps",
    "method",
    "steps",
    "lr",
    "width",
    "budget_minutes",
    "seed",
    "clean_accuracy",
    "robust_accuracy",
    "natural_clean_accuracy",
    "trust_flags",
    "gate",
    "pareto",
    "unranked_because",
    "epochs",
    "train_seconds",
    "train_cpu_seconds",
    "minutes",
    "run_id",
)

# What the summary writes in the sweep's directory (the sweep's MLflow run keeps a copy of each).
SUMMARY_FILES = ("summary.csv", "summary.md", "pareto.png")


def summary_csv(rows: list[dict]) -> str:
    """The points as CSV, one row each, in the columns of ``SUMMARY_COLUMNS``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def summary_markdown(rows: list[dict], threat: str, min_clean: float) -> str:
    """The points as a markdown table in the order of ``rank``: the ranked points first."""
    lines = [
        f"## Sweep: {len(rows)} points, {threat}",
        "",
        f"Ranked by worst-case robust accuracy among the points with clean accuracy "
        f"≥ {min_clean:g} and no trust flags; ties go to clean accuracy, then training time.",
        "",
        "| rank | point | clean | robust (worst case) | epochs | train s | train CPU s "
        "| flags | gate | Pareto | unranked because |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rank(rows, min_clean):
        lines.append(
            f"| {row['rank'] or ''} | {row['point']} | {row['clean_accuracy']:.4f} "
            f"| {row['robust_accuracy']:.4f} | {row.get('epochs') or ''} "
            f"| {_number(row.get('train_seconds'), 1)} "
            f"| {_number(row.get('train_cpu_seconds'), 1)} | {row['trust_flags']} "
            f"| {row['gate']} | {'yes' if row['pareto'] else ''} | {row['unranked_because']} |"
        )
    return "\n".join(lines) + "\n"


def write_summary_files(
    rows: list[dict], ranked: list[dict], directory: Path, *, threat: str, min_clean: float
) -> None:
    """The files of ``SUMMARY_FILES`` in ``directory``: ``ranked`` (the rows in the order of
    ``rank``) as CSV, and ``rows`` (in the grid's order) as the markdown table and the plot."""
    write_text(directory / "summary.csv", summary_csv(ranked))
    write_text(directory / "summary.md", summary_markdown(rows, threat, min_clean))
    plot_front(rows, directory / "pareto.png", threat)


def publish_summary(directory: Path) -> None:
    """The sweep's Prefect artifacts: the markdown table (``sweep-summary``) and the plot
    (``sweep-pareto``), from the files ``write_summary_files`` wrote in ``directory``."""
    markdown = (directory / "summary.md").read_text(encoding="utf-8")
    create_markdown_artifact(key="sweep-summary", markdown=markdown)
    create_image_artifact(image_url=png_data_url(directory / "pareto.png"), key="sweep-pareto")
