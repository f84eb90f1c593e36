"""Adaptive attacks against defences with a known answer: EOT-PGD breaks a randomised model that
plain PGD does not, BPDA breaks a rounding preprocessor that plain PGD does not, the suite adds
them when the model checks call for them, and a user's own attack joins the suite by name."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from attacks import PGD
from attacks.adaptive import BPDA, EOTPGD, find_shattering
from attacks.suites import AttackHookError, build_suite
from iocane.base.config import ConfigError, config_from_dict
from iocane.robustness.suite import evaluate_robustness, suite_from_config

WEIGHTS = torch.tensor([1.0, -1.0, 1.0, -1.0])  # a linear two-class score on 2x2 images


def _robust_accuracy(model: nn.Module, attack, images, labels) -> float:
    adversarial = attack(model, images, labels)
    assert (adversarial - images).abs().max() <= attack.eps + 1e-6
    with torch.no_grad():
        return (model(adversarial).argmax(1) == labels).float().mean().item()


def _two_class(score: torch.Tensor) -> torch.Tensor:
    return torch.stack([score, -score], dim=1)


# --- EOT ------------------------------------------------------------------------------------


class Jittery(nn.Module):
    """A linear score plus a term that is tiny in value (at most 0.016) but whose gradient is
    8 times the score's and of random sign on every pass: one pass's gradient points anywhere,
    the expected one is the linear score's."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)
        sign = torch.randint(0, 2, (len(x), 1)).float() * 2 - 1
        jitter = (sign * 8 * torch.sin(2000 * x) / 2000).sum(1)
        return _two_class(x @ WEIGHTS + jitter)


def _jitter_points(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = 0.3 + 0.4 * torch.rand((n, 1, 2, 2), generator=generator)
    score = images.flatten(1) @ WEIGHTS
    keep = score.abs() > 0.05  # predictions the jitter cannot flip
    images = images[keep]
    return images, (images.flatten(1) @ WEIGHTS < 0).long()


def test_eot_breaks_a_randomised_model_that_pgd_does_not() -> None:
    torch.manual_seed(0)
    model = Jittery()
    images, labels = _jitter_points()
    # The known answer: every margin is below 0.8, the most eps 0.2 can move a score with
    # weights of +-1 on 4 pixels that all have 0.2 of room: robust accuracy 0.
    assert (images.flatten(1) @ WEIGHTS).abs().max() < 0.8
    plain = _robust_accuracy(model, PGD(eps=0.2, steps=20, seed=1), images, labels)
    eot = _robust_accuracy(model, EOTPGD(eps=0.2, steps=20, samples=64, seed=1), images, labels)
    assert eot <= 0.02
    assert plain >= 0.5  # the single-pass gradient points anywhere


# --- BPDA -----------------------------------------------------------------------------------


class Round(nn.Module):
    """Quantisation to 5 levels: its gradient is zero everywhere."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.round(images * 4) / 4


class Linear(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _two_class(images.flatten(1) @ WEIGHTS - 0.1)


class RoundingDefence(nn.Module):
    """Rounding as a submodule, or written inline in ``forward``."""

    def __init__(self, inline: bool) -> None:
        super().__init__()
        self.inline = inline
        self.round = Round()
        self.classify = Linear()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.inline:
            return self.classify(torch.round(images * 4) / 4)
        return self.classify(self.round(images))


def _exact_robust_accuracy(images: torch.Tensor, labels: torch.Tensor, eps: float) -> float:
    """Brute force over every rounded image within eps: which points can be flipped at all."""
    survives = []
    for image, label in zip(images.flatten(1), labels, strict=True):
        options = [
            torch.arange(
                torch.round(4 * (pixel - eps).clamp(0, 1)),
                torch.round(4 * (pixel + eps).clamp(0, 1)) + 1,
            )
            / 4
            for pixel in image
        ]
        scores = [torch.tensor(levels) @ WEIGHTS - 0.1 for levels in itertools.product(*options)]
        wanted = (lambda s: s > 0) if label == 0 else (lambda s: s < 0)
        survives.append(all(wanted(score) for score in scores))
    return sum(survives) / len(survives)


def _rounded_points(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand((n, 1, 2, 2), generator=generator)
    score = (torch.round(images * 4) / 4).flatten(1) @ WEIGHTS - 0.1
    return images, (score < 0).long()


@pytest.mark.parametrize("inline", [False, True], ids=["submodule", "inline"])
def test_bpda_breaks_a_rounding_preprocessor_that_pgd_does_not(inline: bool) -> None:
    model = RoundingDefence(inline)
    images, labels = _rounded_points()
    exact = _exact_robust_accuracy(images, labels, eps=0.3)
    plain = _robust_accuracy(model, PGD(eps=0.3, steps=20, seed=1), images, labels)
    bpda = _robust_accuracy(model, BPDA(eps=0.3, steps=20, restarts=2, seed=1), images, labels)
    assert exact < 0.5  # most points can be flipped...
    assert plain >= exact + 0.3  # ...but zero gradients leave PGD with its random start only
    assert bpda <= exact + 0.02  # BPDA finds (almost) every flip there is


def test_bpda_bypasses_the_rounding_step_and_nothing_else() -> None:
    model = RoundingDefence(inline=False)
    images, _ = _rounded_points(8)
    found = find_shattering(model, images)
    assert found.modules == [model.round] and found.entry is None
    inline = RoundingDefence(inline=True)
    found = find_shattering(inline, images)
    assert found.modules == [] and found.entry is inline.classify
    honest = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    found = find_shattering(honest, images)
    assert found.modules == [] and found.entry is None


# --- the suite ------------------------------------------------------------------------------


def test_the_model_checks_add_the_adaptive_attacks_they_call_for() -> None:
    images, labels = _rounded_points(64)
    result = evaluate_robustness(
        RoundingDefence(inline=True), images, labels, eps=0.3, preset="quick", device="cpu"
    )
    assert "bpda_pgd" in result.per_attack and "eot_pgd" not in result.per_attack
    assert result.robust_accuracy <= result.per_attack["bpda_pgd"]
    assert any("bpda_pgd" in flag for flag in result.flags)  # still flagged: the model masks

    images, labels = _jitter_points(64)
    result = evaluate_robustness(Jittery(), images, labels, eps=0.2, preset="quick", device="cpu")
    assert "eot_pgd" in result.per_attack


ATTACK_MODULE = '''
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FlipTowardsZero:
    """An attack written for the rounding defence: every pixel to the lowest level in reach."""

    eps: float
    name: str = "to_zero"

    def __call__(self, model, images, labels):
        return (images - self.eps).clamp(0, 1)


def make(eps, norm, seed):
    return FlipTowardsZero(eps=eps)


def not_an_attack(eps, norm, seed):
    return 42
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_defence_attacks.py").write_text(ATTACK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_defence_attacks"
    sys.modules.pop("my_defence_attacks", None)


def test_a_user_attack_joins_the_suite_and_the_worst_case(user_module: str) -> None:
    images, labels = _rounded_points(64)
    suite = build_suite("quick", "Linf", 0.3, extra=(f"{user_module}:make",))
    assert "to_zero" in suite
    result = evaluate_robustness(
        RoundingDefence(inline=False), images, labels, eps=0.3, attacks=suite, device="cpu"
    )
    assert "to_zero" in result.per_attack
    assert result.robust_accuracy <= result.per_attack["to_zero"]


@pytest.mark.parametrize(
    "spec",
    ["my_defence_attacks:missing", "no_such_module:make", "my_defence_attacks:not_an_attack", "x"],
)
def test_a_bad_attack_hook_names_the_params_key(
    user_module: str, spec: str, params_document
) -> None:
    with pytest.raises(AttackHookError):
        build_suite("quick", "Linf", 0.1, extra=(spec,))
    params_document["evaluate"]["extra_attacks"] = [spec]
    with pytest.raises(ConfigError, match=r"evaluate\.extra_attacks"):
        suite_from_config(config_from_dict(params_document))


def test_adaptive_attacks_can_be_asked_for_by_name() -> None:
    suite = build_suite("standard", "L2", 0.5, extra=("eot_pgd", "bpda_pgd"))
    assert isinstance(suite["eot_pgd"], EOTPGD) and isinstance(suite["bpda_pgd"], BPDA)
    assert suite["eot_pgd"].norm == "L2" and suite["eot_pgd"].samples == 16
