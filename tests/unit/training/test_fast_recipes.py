"""The fast-training recipes of issue 19: N-FGSM's training attack (noise of 2 eps, one step of
eps, no projection to the eps ball) and the one-cycle learning rate, stepped every batch."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import iocane.training.epoch
from attacks import NFGSM, PGD
from attacks.threat import make_generator
from iocane.base.config import OptimConfig, TrainConfig, config_from_dict
from iocane.base.layout import Layout
from iocane.training.loop import fit
from iocane.training.recipes import Recipe
from iocane.training.state import make_scheduler
from models import build_model
from tests.helpers.models import TinyLinear
from tests.helpers.tiny_training import SPEC, adversarial_recipe, digits_split

EPS = 0.1


def _linear() -> TinyLinear:
    torch.manual_seed(0)
    return TinyLinear(5 * torch.randn(3, 4), torch.randn(3))


def _batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(n, 1, 2, 2, generator=generator)
    return images, torch.randint(0, 3, (n,), generator=generator)


def _recipe(method: str, **fields) -> Recipe:
    values = {
        "norm": "Linf",
        "eps": EPS,
        "step_size": 0.05,
        "steps": 3,
        "random_start": True,
        "adv_weight": 1.0,
        "eps_ramp_epochs": 0,
        "method": method,
    }
    return adversarial_recipe(**{**values, **fields})


def test_nfgsm_reaches_past_eps_but_stays_within_3_eps_and_the_image() -> None:
    model = _linear()
    images, labels = _batch()
    attack = _recipe("nfgsm").attack(EPS, seed=4)
    assert isinstance(attack, NFGSM) and (attack.noise, attack.step) == (2.0, 1.0)
    adversarial = attack(model, images, labels)
    delta = adversarial - images
    assert delta.abs().max() <= 3 * EPS + 1e-6, "noise 2 eps plus one step of eps at most"
    assert delta.abs().max() > EPS + 1e-3, "not projected back to the eps ball"
    assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_nfgsm_is_one_signed_step_of_eps_from_the_noisy_point() -> None:
    model = _linear()
    images, labels = _batch(8)
    adversarial = NFGSM(eps=EPS, seed=7)(model, images, labels)
    noise = (torch.rand(images.shape, generator=make_generator(7, images.device)) * 2 - 1) * 0.2
    noisy = (images + noise).clamp(0, 1)
    inputs = noisy.clone().requires_grad_(True)
    F.cross_entropy(model(inputs), labels, reduction="sum").backward()
    expected = (noisy + EPS * inputs.grad.sign()).clamp(0, 1)
    assert torch.allclose(adversarial, expected, atol=1e-6)


def test_nfgsm_l2_is_the_analogue_noise_2_eps_step_eps() -> None:
    model = _linear()
    images, labels = _batch()
    adversarial = _recipe("nfgsm", norm="L2").attack(EPS, seed=2)(model, images, labels)
    norms = (adversarial - images).flatten(1).norm(dim=1)
    assert norms.max() <= 3 * EPS + 1e-6 and norms.max() > EPS
    assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_nfgsm_ramps_with_eps() -> None:
    assert _recipe("nfgsm").attack(0.05, seed=0).eps == 0.05


def test_nfgsm_is_a_params_method(params_document: dict) -> None:
    document = {**params_document, "train": {**params_document["train"], "method": "nfgsm"}}
    assert config_from_dict(document).train.method == "nfgsm"


@pytest.mark.parametrize("steps", [3, 4, 5])
def test_few_step_pgd_with_a_larger_step_is_accepted(params_document: dict, steps: int) -> None:
    """PGD-3..5 with a step of 2.5 eps / steps: nothing in the params refuses it, and the
    training attack takes that step."""
    step_size = 2.5 * 0.1 / steps
    train = {**params_document["train"], "method": "pgd", "steps": steps, "step_size": step_size}
    config = config_from_dict({**params_document, "train": train})
    attack = Recipe.from_config(config.train).attack(config.train.eps, seed=0)
    assert isinstance(attack, PGD) and (attack.steps, attack.step_size) == (steps, step_size)


def _optim(schedule: str, epochs: int = 2) -> OptimConfig:
    return OptimConfig(
        epochs=epochs, batch_size=32, lr=0.1, momentum=0.9, weight_decay=0.0, lr_schedule=schedule
    )


def test_onecycle_rises_to_lr_at_two_fifths_and_falls_to_zero() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make_scheduler(optimizer, _optim("onecycle", epochs=5), batches_per_epoch=4)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[7] == pytest.approx(0.1), "the peak at 2/5 of the 20 steps"
    assert all(a < b for a, b in pairwise(lrs[:8])), "rising to the peak"
    assert all(a > b for a, b in pairwise(lrs[7:])), "falling from it"
    assert lrs[0] == pytest.approx(0.1 / 8) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def _fit_recording_lrs(
    root: Path, monkeypatch: pytest.MonkeyPatch, optim: OptimConfig, method: str = "pgd"
) -> tuple[dict, list[float]]:
    """A run through the normal training path; returns its metrics and each step's lr."""
    real_step, lrs = iocane.training.epoch.train_step, []

    def recording_step(model, optimizer, *args, **kwargs):
        lrs.append(optimizer.param_groups[0]["lr"])
        return real_step(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(iocane.training.epoch, "train_step", recording_step)
    torch.manual_seed(0)
    result = fit(
        stage="train",
        model=build_model(SPEC),
        spec=SPEC,
        data=digits_split(),
        optim=optim,
        recipe=_recipe(method, steps=2, adv_weight=0.5),
        val_attack=PGD(eps=EPS, steps=2, seed=1),
        layout=Layout(root),
        seed=3,
        run_key="key",
        device=torch.device("cpu"),
    )
    return result, lrs


def test_onecycle_moves_the_lr_every_batch_of_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, lrs = _fit_recording_lrs(tmp_path, monkeypatch, _optim("onecycle", epochs=3))
    assert len(lrs) == 12 and len(set(lrs)) == 12, "4 batches an epoch, a new lr each"
    peak = lrs.index(max(lrs))
    assert 0 < peak < 11 and max(lrs) <= 0.1 + 1e-12
    assert lrs[:peak] == sorted(lrs[:peak]) and lrs[peak:] == sorted(lrs[peak:], reverse=True)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    history = torch.load(
        Layout(tmp_path).checkpoint_dir("train") / "epoch-0003.pt", weights_only=True
    )["history"]
    assert [row["lr"] for row in history] == [lrs[3], lrs[7], lrs[11]], "each epoch's last lr"
    assert result["epochs"] == 3


@pytest.mark.parametrize(("schedule", "per_epoch"), [("constant", [0.1] * 3), ("step", None)])
def test_the_epoch_schedules_still_move_once_an_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schedule: str, per_epoch: list | None
) -> None:
    _, lrs = _fit_recording_lrs(tmp_path, monkeypatch, _optim(schedule, epochs=3))
    epochs = [lrs[i : i + 4] for i in range(0, 12, 4)]
    assert all(len(set(epoch)) == 1 for epoch in epochs), "constant within an epoch"
    expected = per_epoch or [0.1, 0.1, 0.01]  # step: /10 after ceil(1.5) = 2 epochs
    assert [epoch[0] for epoch in epochs] == pytest.approx(expected)


def test_nfgsm_trains_with_onecycle_and_trades_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for method in ("nfgsm", "trades"):
        result, lrs = _fit_recording_lrs(
            tmp_path / method, monkeypatch, _optim("onecycle", epochs=1), method=method
        )
        assert result["train_adv_loss"] is not None and len(set(lrs)) == 4


def test_onecycle_is_a_params_schedule_for_warmup_and_train(params_document: dict) -> None:
    document = {
        **params_document,
        "warmup": {**params_document["warmup"], "lr_schedule": "onecycle"},
        "train": {**params_document["train"], "lr_schedule": "onecycle"},
    }
    config = config_from_dict(document)
    assert isinstance(config.train, TrainConfig)
    assert (config.warmup.lr_schedule, config.train.lr_schedule) == ("onecycle", "onecycle")
