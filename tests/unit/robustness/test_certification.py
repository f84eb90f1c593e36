"""The certified band (iocane/robustness/certification.py) on a small digits model: the real
verifier's figures beside the suite's, a planted verifier bug caught by the trust flag, a model
the verifier cannot bound, randomized smoothing, and the metrics document."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import iocane.certify
import iocane.robustness.certification as certification
import iocane.robustness.evaluation as evaluation_module
from iocane.base.certify_names import BOUND_METHODS
from iocane.base.config import Config, config_from_dict
from iocane.certify import Certificate
from iocane.robustness.certification import certify_models
from iocane.robustness.evaluation import metrics_from
from iocane.robustness.gate import check_gate
from iocane.robustness.suite import evaluate_robustness

POINTS = 64


def _config(params_document: dict, eps: float, certify: dict | None) -> Config:
    params_document["train"]["eps"] = eps
    params_document["evaluate"].update(preset="quick", batch_size=64, threats={}, certify=certify)
    params_document["evaluate"]["n_samples"] = POINTS
    return config_from_dict(params_document)


def _suite(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float):
    return evaluate_robustness(
        model, images, labels, norm="Linf", eps=eps, preset="quick", device="cpu"
    )


def test_the_config_names_are_the_verifiers() -> None:
    assert BOUND_METHODS == iocane.certify.BOUND_METHODS


def test_the_band_of_a_real_certificate_is_below_the_attacked_figure(
    trained_digits_model, params_document: dict
) -> None:
    """At a tiny eps IBP proves part of the natural model's points; the suite breaks none of
    them, the certified figure lies below the attacked one and the gap is their difference."""
    model, images, labels = trained_digits_model
    images, labels, eps = images[:POINTS], labels[:POINTS], 0.0005
    config = _config(params_document, eps, {"bounds": ["ibp"]})
    suite = _suite(model, images, labels, eps)
    found = certify_models(
        config,
        {"hardened": model},
        images,
        labels,
        {"hardened": suite.robust_per_sample},
        suite.robust_accuracy,
    )
    band = found.document
    assert found.flags == [] and band["broken_certified"] == 0
    assert (band["norm"], band["eps"], band["unsupported"]) == ("Linf", eps, None)
    assert 0 < band["certified_accuracy"] <= band["attacked_accuracy"] == suite.robust_accuracy
    assert band["gap"] == pytest.approx(band["attacked_accuracy"] - band["certified_accuracy"])
    assert band["bounds"]["ibp"]["hardened"] == band["certified_accuracy"]
    assert band["bounds"]["ibp"]["natural"] is None and band["natural_certified_accuracy"] is None
    assert band["smoothing"] is None


def _everything_certified(model, images, labels, *, norm, eps, methods, batch_size):
    """A planted verifier bug: every point 'proven', whatever the model."""
    everything = torch.ones(len(labels), dtype=torch.bool)
    return {
        method: Certificate(method, norm, eps, everything, 1.0, 0.0)
        for method in (*methods, "best")
    }


def test_a_planted_verifier_bug_raises_the_trust_flag_and_fails_the_gate(
    trained_digits_model, params_document: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verifier that certifies every point of two natural models at eps 0.1, which the suite
    breaks almost everywhere: the evaluation counts the broken certified points of both, the
    hardened model's flags say so, and a gate that requires trust fails."""
    monkeypatch.setattr(certification, "certify_bounds", _everything_certified)
    model, images, labels = trained_digits_model
    images, labels = images[:POINTS], labels[:POINTS]
    config = _config(params_document, 0.1, {"bounds": ["ibp", "crown"]})
    models = {"hardened": model, "natural": copy.deepcopy(model)}
    results = {label: _suite(each, images, labels, 0.1) for label, each in models.items()}
    evaluation = {
        **{label: result.to_dict() for label, result in results.items()},
        "preset": "quick",
        "data_fingerprint": "f",
        "dataset": "digits",
        "alignment_targets_reached": {},
    }
    # evaluate_models' own step, on the suite's real results
    evaluation_module._add_certified(evaluation, config, models, images, labels, results)
    metrics = metrics_from(evaluation)
    band = metrics["certified"]
    broken = {
        label: round((1 - figures["robust_accuracy"]) * POINTS)
        for label, figures in (("hardened", metrics), ("natural", metrics["natural"]))
    }
    assert broken["hardened"] > 0 and band["broken_certified"] == sum(broken.values())
    assert band["certified_accuracy"] == 1.0 > metrics["robust_accuracy"]
    flags = [flag for flag in metrics["flags"] if flag.startswith("certified but broken")]
    assert len(flags) == 1, metrics["flags"]
    assert f"broke {sum(broken.values())} point(s)" in flags[0]
    assert f"hardened model: ibp {broken['hardened']}, crown {broken['hardened']}" in flags[0]
    verdict = check_gate(config.gate, metrics)
    assert not verdict["passed"]
    trust = next(check for check in verdict["checks"] if check["name"] == "trust_flags")
    assert not trust["passed"]


class _WithGelu(nn.Module):
    """A model with a layer the verifier does not know."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.GELU())
        self.head = nn.Linear(16, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def test_a_model_the_verifier_cannot_bound_gets_its_message_and_no_figures(
    trained_digits_model, params_document: dict
) -> None:
    """The natural model is bounded, the hardened one (a GELU) is not: its figures are null and
    the message names the layer; nothing fails."""
    natural, images, labels = trained_digits_model
    images, labels, eps = images[:POINTS], labels[:POINTS], 0.0005
    torch.manual_seed(0)
    hardened = _WithGelu().eval()
    config = _config(params_document, eps, {"bounds": ["ibp"]})
    standing = {"hardened": [True] * POINTS, "natural": [True] * POINTS}
    found = certify_models(
        config, {"hardened": hardened, "natural": natural}, images, labels, standing, 0.5
    )
    band = found.document
    assert "features.2" in band["unsupported"] and "GELU" in band["unsupported"]
    assert band["certified_accuracy"] is None and band["gap"] is None
    assert band["bounds"]["ibp"]["hardened"] is None
    assert band["bounds"]["ibp"]["natural"] > 0 and band["natural_unsupported"] is None
    assert band["attacked_accuracy"] == 0.5 and found.flags == []


def test_smoothing_alone_reports_each_radius_per_model(
    trained_digits_model, params_document: dict
) -> None:
    model, images, labels = trained_digits_model
    images, labels = images[:16], labels[:16]
    smoothing = {"sigma": 0.1, "n0": 4, "n": 32, "alpha": 0.01, "radii": [0.05, 0.5]}
    config = _config(params_document, 0.1, {"bounds": [], "smoothing": smoothing})
    standing = {"hardened": [True] * 16, "natural": [True] * 16}
    band = certify_models(
        config, {"hardened": model, "natural": model}, images, labels, standing, 0.5
    ).document
    assert band["bounds"] == {} and band["certified_accuracy"] is None
    figures = band["smoothing"]
    assert (figures["sigma"], figures["n0"], figures["n"], figures["alpha"]) == (0.1, 4, 32, 0.01)
    assert set(figures["hardened"]) == {"0.05", "0.5"} == set(figures["natural"])
    # The same model, seed and noise: the same figures; a larger radius never certifies more.
    assert figures["hardened"] == figures["natural"]
    assert figures["hardened"]["0.5"] <= figures["hardened"]["0.05"]
    assert 0 <= figures["abstained"] <= 1 and figures["seconds"] > 0


def test_no_certify_section_leaves_the_evaluation_as_it_was() -> None:
    evaluation = {
        "hardened": {
            "clean_accuracy": 0.9,
            "robust_accuracy": 0.5,
            "per_attack": {},
            "flags": [],
            "norm": "Linf",
            "eps": 0.1,
            "n_samples": 4,
            "seconds_per_attack": {},
            "broken_only_by_reference": {},
        },
        "natural": None,
        "preset": "quick",
        "data_fingerprint": "f",
        "dataset": "digits",
        "alignment_targets_reached": {},
    }
    assert "certified" not in metrics_from(evaluation)
    evaluation["certified"] = {"certified_accuracy": 0.4}
    assert metrics_from(evaluation)["certified"] == {"certified_accuracy": 0.4}
