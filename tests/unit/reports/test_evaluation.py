"""evaluate_and_report: the evaluate stage's two-model evaluation, and every file it writes."""

from __future__ import annotations

import torch

from iocane.config import load_config
from iocane.data.prepared import PreparedData, Split
from iocane.files import read_json
from iocane.layout import Layout
from iocane.reports.evaluation import evaluate_and_report
from models import ModelSpec, build_model
from tests.helpers.paths import PROJECT_ROOT

METRIC_KEYS = {
    "clean_accuracy",
    "robust_accuracy",
    "attacks",
    "flags",
    "threat_model",
    "eps",
    "preset",
    "n_samples",
    "seconds_per_attack",
    "cw_median_l2",
    "broken_only_by_reference",
    "natural",
    "data_fingerprint",
    "dataset",
    "alignment_targets_reached",
    "seconds",
    "forward_passes",
    "backward_passes",
    "forward_images",
    "backward_images",
}


def test_standard_report_with_transfer_and_distances(trained_digits_model, tmp_path) -> None:
    model, images, labels = trained_digits_model
    torch.manual_seed(1)
    natural = build_model(ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=16)).eval()
    split = Split(images[:40], labels[:40])
    data = PreparedData(
        split,
        split,
        split,
        {
            "dataset": "digits",
            "fingerprint": "f",
            "num_classes": 10,
            "class_names": [str(i) for i in range(10)],
        },
    )
    config = load_config(PROJECT_ROOT / "params.yaml", ["evaluate.n_samples=40"])
    out = Layout(tmp_path)
    metrics = evaluate_and_report(config, model, natural, data, out)
    assert "transfer" in metrics["attacks"] and "transfer" not in metrics["natural"]["attacks"]
    assert metrics["cw_median_l2"] > 0
    assert metrics["robust_accuracy"] <= min(metrics["attacks"].values())
    report = out.report_file.read_text()
    assert "Median L2 distance" in report and "transfer" in report
    assert out.curves_plot.exists() and out.examples_plot.exists()
    # the same keys and file names as before the evaluation moved into its own rooms
    passes = ("forward_passes", "backward_passes", "forward_images", "backward_images")
    by_model = {f"{model}_{key}" for model in ("hardened", "natural") for key in passes}
    assert set(metrics) == METRIC_KEYS | by_model
    assert read_json(out.metrics_file("evaluate")) == metrics
    assert set(read_json(out.curves_file)) == {"Linf", "L2"}
    assert out.alignment_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every row of the table has the header's cells: n/a where the natural model met no transfer
    header, *rows = [line for line in report.splitlines() if line.startswith("|")]
    assert len(rows) == 3 and all(row.count("|") == header.count("|") for row in rows)
    assert rows[-1].startswith("| natural (warmup) |") and rows[-1].endswith("| n/a |")
