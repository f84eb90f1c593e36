"""The threat profile's runner (iocane/robustness/threat_profile.py) on a small digits model: the
worst case within a threat, the mean of the corruptions, the model without a natural baseline,
the training threat taken from the suite rather than attacked again, and the metrics document.

The corruption and spatial members here are stand-ins defined in this file (the table's own
ones are tested with their modules): a test replaces those two entries of ``attacks.threats``'
table, as the attack registry's tests replace ``ATTACKS``."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

import attacks.threats
from attacks.threats import THREATS, ThreatEntry
from iocane.base.config import Config, config_from_dict
from iocane.robustness.evaluation import metrics_from
from iocane.robustness.threat_profile import threat_profile


@dataclass(frozen=True)
class Dimmed:
    """A stand-in corruption: the image times 1 - severity / 6 (ignores the model)."""

    kind: str
    severity: int

    @property
    def name(self) -> str:
        return f"{self.kind}_s{self.severity}"

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        factor = 1 - self.severity / 6 if self.kind == "dim" else 1 - self.severity / 12
        return images * factor


@dataclass(frozen=True)
class Shifted:
    """A stand-in spatial member: the image rolled by ``pixels`` columns."""

    pixels: int

    @property
    def name(self) -> str:
        return f"shift_{self.pixels}"

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        return torch.roll(images, self.pixels, dims=3)


def _stand_in_corruptions(budget, preset, seed):
    members = [Dimmed(kind, severity) for kind in ("dim", "fade") for severity in budget]
    return {member.name: member for member in members}


def _stand_in_spatial(budget, preset, seed):
    shifts = range(-int(budget["translate"]), int(budget["translate"]) + 1)
    return {Shifted(p).name: Shifted(p) for p in shifts if p}


@pytest.fixture
def stand_in_members(monkeypatch: pytest.MonkeyPatch) -> None:
    builders = {"corruptions": _stand_in_corruptions, "spatial": _stand_in_spatial}
    table = tuple(
        replace(entry, build_members=builders[entry.name]) if entry.name in builders else entry
        for entry in THREATS
    )
    monkeypatch.setattr(attacks.threats, "THREATS", table)


def _config(params_document: dict, threats: dict) -> Config:
    params_document["evaluate"].update(preset="quick", batch_size=64, threats=threats)
    return config_from_dict(params_document)  # train: Linf at eps 0.1, the default


def _suite_result(accuracy: float) -> dict:
    return {"robust_accuracy": accuracy, "per_attack": {"suite_attack": accuracy}}


def _correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(1) == labels


def test_worst_case_within_a_threat_and_the_mean_of_the_corruptions(
    trained_digits_model, params_document: dict, stand_in_members: None
) -> None:
    model, images, labels = trained_digits_model
    images, labels = images[:100], labels[:100]
    natural = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # an untrained "natural" model
    threats = {"l2": 1.0, "corruptions": [2, 5], "spatial": {"rotate": 0, "translate": 2}}
    config = _config(params_document, threats)
    models = {"hardened": model, "natural": natural}
    suites = {"hardened": _suite_result(0.5), "natural": _suite_result(0.0)}
    profile = threat_profile(config, models, images, labels, suites)

    assert list(profile) == ["l2", "corruptions", "spatial"]
    l2, corruptions, spatial = profile["l2"], profile["corruptions"], profile["spatial"]
    assert l2["budget"] == 1.0 and l2["budget_text"] == "eps 1"
    assert l2["measure"] == "worst case" and set(l2["members"]["hardened"]) == {
        "fgsm",
        "pgd_short",
        "pgd",
        "apgd_ce",
    }
    for figures in (l2, spatial):  # the per-sample worst case is below every member
        for label in models:
            assert figures[label] is not None
            assert figures[label] <= min(figures["members"][label].values()) + 1e-9
    # At 1.0 in L2 on 8x8 digits PGD breaks some points the single FGSM step does not.
    assert l2["hardened"] < l2["members"]["hardened"]["fgsm"]

    # The corruptions: each stand-in's accuracy, computed here, averaged over severities.
    correct = _correct(model, images, labels)
    expected = {}
    for kind in ("dim", "fade"):
        per_severity = [
            (correct & _correct(model, Dimmed(kind, s)(model, images, labels), labels))
            .float()
            .mean()
            .item()
            for s in (2, 5)
        ]
        expected[kind] = sum(per_severity) / 2
    assert corruptions["measure"] == "mean" and corruptions["budget_text"] == "severities 2, 5"
    assert corruptions["members"]["hardened"] == pytest.approx(expected)
    assert corruptions["hardened"] == pytest.approx(sum(expected.values()) / 2)
    assert min(expected.values()) < corruptions["hardened"] < max(expected.values())

    assert set(spatial["members"]["hardened"]) == {"shift_-2", "shift_-1", "shift_1", "shift_2"}
    shifted_ok = [_correct(model, torch.roll(images, p, dims=3), labels) for p in (-2, -1, 1, 2)]
    worst = (correct & torch.stack(shifted_ok).all(0)).float().mean().item()
    assert spatial["hardened"] == pytest.approx(worst)
    for figures in profile.values():
        assert figures["seconds"] >= 0 and isinstance(figures["flags"], list)
        assert "from_suite" not in figures


def test_the_training_threat_is_the_suites_figure_not_attacked_again(
    trained_digits_model, params_document: dict
) -> None:
    model, images, labels = trained_digits_model
    config = _config(params_document, {"linf": 0.1})
    # Figures no attack could produce on this model: only the suite's result can give them.
    suites = {"hardened": _suite_result(0.123), "natural": _suite_result(0.045)}
    natural = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    profile = threat_profile(
        config, {"hardened": model, "natural": natural}, images, labels, suites
    )
    linf = profile["linf"]
    assert (linf["hardened"], linf["natural"]) == (0.123, 0.045)
    assert linf["members"] == {
        "hardened": {"suite_attack": 0.123},
        "natural": {"suite_attack": 0.045},
    }
    assert linf["from_suite"] and linf["flags"] == [] and linf["budget_text"] == "eps 0.1"


def test_without_a_natural_model_natural_is_null(
    trained_digits_model, params_document: dict, stand_in_members: None
) -> None:
    model, images, labels = trained_digits_model
    config = _config(params_document, {"linf": 0.05, "corruptions": [1]})
    profile = threat_profile(
        config, {"hardened": model}, images[:50], labels[:50], {"hardened": _suite_result(0.5)}
    )
    for figures in profile.values():
        assert figures["natural"] is None and figures["members"]["natural"] is None
        assert 0 <= figures["hardened"] <= 1
    assert "from_suite" not in profile["linf"]  # eps 0.05 is not the training eps 0.1


def test_a_member_leaving_the_image_range_is_flagged_and_named(
    trained_digits_model, params_document: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, images, labels = trained_digits_model

    def brightened(budget, preset, seed):
        member = Dimmed("dim", -6)  # factor 2: pixels up to 2
        return {member.name: member}

    table = tuple(
        replace(entry, build_members=brightened) if entry.name == "corruptions" else entry
        for entry in THREATS
    )
    monkeypatch.setattr(attacks.threats, "THREATS", table)
    config = _config(params_document, {"corruptions": [1]})
    profile = threat_profile(
        config, {"hardened": model}, images[:50], labels[:50], {"hardened": _suite_result(0.5)}
    )
    assert profile["corruptions"]["flags"] == ["dim_s-6: images leave the [0, 1] range"]


def test_metrics_carry_the_profile_only_when_there_is_one() -> None:
    hardened = {
        "clean_accuracy": 0.9,
        "robust_accuracy": 0.5,
        "per_attack": {},
        "flags": [],
        "norm": "Linf",
        "eps": 0.1,
        "n_samples": 10,
        "seconds_per_attack": {},
        "broken_only_by_reference": {},
    }
    evaluation = {
        "hardened": hardened,
        "natural": None,
        "preset": "quick",
        "data_fingerprint": "x",
        "dataset": "digits",
        "alignment_targets_reached": None,
    }
    assert "threats" not in metrics_from(evaluation)
    profile = {"l0": {"hardened": 0.2}}
    assert metrics_from({**evaluation, "threats": profile})["threats"] == profile


def test_a_stand_in_entry_keeps_the_table_shape() -> None:
    # The stand-ins replace only what builds members: names, checks and texts stay the table's.
    entry = next(entry for entry in THREATS if entry.name == "corruptions")
    assert isinstance(replace(entry, build_members=_stand_in_corruptions), ThreatEntry)
