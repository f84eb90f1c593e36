"""evaluate_and_report: the evaluate stage's two-model evaluation, and every file it writes."""

from __future__ import annotations

import torch

from iocane.base.config import load_config
from iocane.base.files import read_json
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData, Split
from iocane.reports.evaluation import evaluate_and_report
from iocane.robustness.suite import suite_from_config
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
    "cw_not_found_share",
    "cw_max_const",
    "cw_seconds",
    "cw_flags",
    "l2_half_accuracy_eps",
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
    # The standard suite without the threat profile and the certified band (the quick test
    # below runs both): the same keys and files as before them.
    config = load_config(
        PROJECT_ROOT / "params.yaml",
        ["evaluate.n_samples=40", "evaluate.threats={}", "evaluate.certify=null"],
    )
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


def test_a_model_alone_has_no_natural_column_and_no_transfer(
    trained_digits_model, tmp_path, monkeypatch
) -> None:
    """``iocane evaluate`` on a model iocane did not train: no natural model, so no surrogate
    for the transfer attack, no natural row or curve, and the models named as the caller says."""
    import iocane.robustness.evaluation as evaluation

    surrogates = []

    def recording_suite(config, surrogate=None):
        surrogates.append(surrogate)
        return suite_from_config(config, surrogate)

    monkeypatch.setattr(evaluation, "suite_from_config", recording_suite)
    model, images, labels = trained_digits_model
    split = Split(images[:40], labels[:40])
    meta = {
        "dataset": "digits",
        "fingerprint": "f",
        "num_classes": 10,
        "class_names": [str(i) for i in range(10)],
    }
    data = PreparedData(split, split, split, meta)
    # IBP alone: CROWN's cost on this model is its own tests' business (tests/unit/certify).
    config = load_config(
        PROJECT_ROOT / "params.yaml",
        ["evaluate.n_samples=40", "evaluate.preset=quick", "evaluate.certify.bounds=[ibp]"],
    )
    out = Layout(tmp_path)
    labels_given = {"hardened": "evaluated", "natural": "baseline"}
    metrics = evaluate_and_report(config, model, None, data, out, labels_given)
    assert surrogates == [None] and metrics["natural"] is None
    passes = ("forward_passes", "backward_passes", "forward_images", "backward_images")
    # params.yaml's threat profile and certified band, on the model alone: no natural figures,
    # the figure drawn (iocane evaluate certifies any model it can)
    added = {"threats", "certified"}
    assert set(metrics) == METRIC_KEYS | added | {f"hardened_{key}" for key in passes}
    band = metrics["certified"]
    assert list(band["bounds"]) == ["ibp"] and band["natural_certified_accuracy"] is None
    assert band["attacked_accuracy"] == metrics["robust_accuracy"]
    assert 0 <= band["certified_accuracy"] <= band["attacked_accuracy"]
    assert band["broken_certified"] == 0 and band["unsupported"] is None
    assert "## What is proven" in out.report_file.read_text()
    assert set(metrics["threats"]) == {"linf", "l0", "patch", "corruptions", "spatial"}
    assert all(threat["natural"] is None for threat in metrics["threats"].values())
    assert metrics["threats"]["linf"]["hardened"] == metrics["robust_accuracy"]
    assert "## What the model withstands" in out.report_file.read_text()
    assert out.threat_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(metrics["alignment_targets_reached"]) == {"hardened"}
    assert all(set(curve) == {"eps", "hardened"} for curve in read_json(out.curves_file).values())
    report = out.report_file.read_text()
    models_table = next(part for part in report.split("\n\n") if part.startswith("| model |"))
    rows = models_table.splitlines()[2:]
    assert len(rows) == 1 and rows[0].startswith("| evaluated |")
    assert "natural" not in report and "the evaluated model keeps" in report
    assert out.alignment_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
