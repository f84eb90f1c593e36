"""No non-finite number in what the evaluate stage writes, even where C&W finds nothing: a
model no perturbation can fool leaves C&W's median "not found" (null), not ``Infinity``."""

from __future__ import annotations

import json

import torch
from torch import nn

from iocane.base.config import load_config
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData, Split
from iocane.reports.evaluation import evaluate_and_report
from tests.helpers.finite import non_finite_tokens, text_files
from tests.helpers.paths import PROJECT_ROOT


class Constant(nn.Module):
    """Class 0 whatever the input: clean-correct on class 0, and nothing moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.eye(10)[0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(images), 10) + 0 * images.flatten(1).sum(1, keepdim=True)


def test_a_model_cw_cannot_fool_writes_no_infinity(tmp_path) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 4, 4, generator=generator)
    labels = torch.zeros(12, dtype=torch.int64)
    split = Split(images, labels)
    meta = {
        "dataset": "constant",
        "fingerprint": "f",
        "num_classes": 10,
        "class_names": [str(i) for i in range(10)],
    }
    config = load_config(
        PROJECT_ROOT / "params.yaml",
        ["evaluate.n_samples=12", "evaluate.preset=standard", "train.norm=L2", "train.eps=0.5"],
    )
    out = Layout(tmp_path)
    metrics = evaluate_and_report(
        config, Constant(), Constant(), PreparedData(split, split, split, meta), out
    )
    assert metrics["cw_median_l2"] is None and metrics["cw_not_found_share"] == 1.0
    assert metrics["natural"]["cw_median_l2"] is None
    assert json.loads(out.metrics_file("evaluate").read_text(), parse_constant=_reject)
    report = out.report_file.read_text()
    assert "not found (100% of points not found with c <= 1e+06)" in report
    # Nothing moves it, so its L2 curve never falls to half: no comparison, and the report says so.
    assert metrics["l2_half_accuracy_eps"] is None and metrics["cw_flags"] == []
    assert "never falls to half its clean accuracy: no check" in report
    assert len(text_files(tmp_path)) >= 3  # the metrics, the curves, the report
    assert non_finite_tokens(tmp_path) == []


def _reject(token: str) -> None:
    raise AssertionError(f"non-finite {token} in strict JSON")
