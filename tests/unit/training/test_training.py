"""The training step: eps ramp, the clean/adversarial loss mix, and the per-epoch checkpoint."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from attacks import PGD
from iocane.training.epoch import ramped_eps
from iocane.training.recipes import training_loss
from iocane.training.state import make_scheduler


def test_eps_ramp_is_linear_then_flat() -> None:
    n_batches = 4
    values = [
        ramped_eps(0.1, 2, epoch, batch, n_batches)
        for epoch in range(3)
        for batch in range(n_batches)
    ]
    assert values[0] == pytest.approx(0.1 / 8)
    assert values[3] == pytest.approx(0.05)  # end of the first of two ramp epochs
    assert values[7] == pytest.approx(0.1)
    assert all(later >= earlier for earlier, later in itertools.pairwise(values))
    assert values[8:] == [pytest.approx(0.1)] * 4
    assert ramped_eps(0.1, 0, 0, 0, n_batches) == 0.1  # no ramp


@pytest.mark.parametrize("adv_weight", [0.0, 0.5, 1.0])
def test_loss_mix_matches_hand_computation(trained_digits_model, adv_weight: float) -> None:
    model, images, labels = trained_digits_model
    images, labels = images[:32], labels[:32]
    attack = PGD(eps=0.1, steps=5, seed=7)
    loss, stats = training_loss(model, images, labels, attack, adv_weight)
    with torch.no_grad():
        clean = F.cross_entropy(model(images), labels)
        adversarial = attack(model, images, labels)
        adv = F.cross_entropy(model(adversarial), labels)
    expected = (1 - adv_weight) * clean + adv_weight * adv if adv_weight > 0 else clean
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats.clean_loss.item() == pytest.approx(clean.item() * 32, rel=1e-5)
    if adv_weight > 0:
        assert stats.adv_loss.item() > stats.clean_loss.item()
        assert stats.adv_correct <= stats.clean_correct
    else:
        assert stats.adv_loss is None


def test_training_loss_gradient_reaches_parameters_only_through_loss(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    model.zero_grad(set_to_none=True)
    loss, _ = training_loss(model, images[:16], labels[:16], PGD(eps=0.1, steps=3), 1.0)
    assert all(parameter.grad is None for parameter in model.parameters())  # attack left no grads
    loss.backward()
    assert all(parameter.grad is not None for parameter in model.parameters())
    model.zero_grad(set_to_none=True)


def test_schedulers(params_document: dict) -> None:
    from iocane.base.config import config_from_dict

    config = config_from_dict(params_document)
    for schedule, final_ratio in (("cosine", 0.0), ("step", 0.01), ("constant", 1.0)):
        optim = type(config.train)(**{**config.train.__dict__, "lr_schedule": schedule})
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make_scheduler(optimizer, optim)
        for _ in range(optim.epochs):
            optimizer.step()
            scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(final_ratio, abs=1e-9)
