"""Attack properties: inside the eps ball and [0,1], deterministic, and known answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attacks import FGSM, PGD, threat_model

from .conftest import TinyLinear

ATTACKS = {
    "fgsm-Linf": lambda: FGSM(eps=0.1, norm="Linf"),
    "fgsm-L2": lambda: FGSM(eps=0.5, norm="L2"),
    "pgd-Linf": lambda: PGD(eps=0.1, norm="Linf", steps=10, restarts=2),
    "pgd-L2": lambda: PGD(eps=0.5, norm="L2", steps=10, restarts=2),
    "pgd-margin": lambda: PGD(eps=0.1, norm="Linf", steps=10, loss="margin"),
}


@pytest.mark.parametrize("make_attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_attack_stays_in_ball_and_range(make_attack, trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    attack = make_attack()
    adversarial = attack(model, images, labels)
    assert adversarial.shape == images.shape
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    distance = threat_model(attack.norm).norm(adversarial - images)
    assert distance.max() <= attack.eps * (1 + 1e-5)
    with torch.no_grad():
        clean = (model(images).argmax(1) == labels).float().mean()
        robust = (model(adversarial).argmax(1) == labels).float().mean()
    assert robust < clean  # the attack does something on a natural model


@pytest.mark.parametrize("make_attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_attack_is_deterministic(make_attack, trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    assert torch.equal(make_attack()(model, images, labels), make_attack()(model, images, labels))


def test_pgd_beats_fgsm_and_restarts_help(trained_digits_model) -> None:
    model, images, labels = trained_digits_model

    def accuracy(adversarial: torch.Tensor) -> float:
        with torch.no_grad():
            return (model(adversarial).argmax(1) == labels).float().mean().item()

    eps = 0.05
    fgsm = accuracy(FGSM(eps=eps)(model, images, labels))
    pgd_one = accuracy(PGD(eps=eps, steps=20, restarts=1)(model, images, labels))
    pgd_three = accuracy(PGD(eps=eps, steps=20, restarts=3)(model, images, labels))
    assert pgd_one <= fgsm
    assert pgd_three <= pgd_one


def _linear_case() -> tuple[TinyLinear, torch.Tensor, torch.Tensor]:
    # Two classes, logit difference w.x + b with w = (1, -2, 0.5, 0) - (0, 0, 0, 0).
    weight = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    model = TinyLinear(weight, torch.zeros(2))
    images = torch.full((1, 1, 2, 2), 0.5)
    labels = torch.tensor([0])
    return model, images, labels


def test_fgsm_linf_known_answer_on_linear_model() -> None:
    # The optimal Linf perturbation against a linear margin is -eps * sign(w) on each pixel.
    model, images, labels = _linear_case()
    adversarial = FGSM(eps=0.1)(model, images, labels)
    expected = images + torch.tensor([-0.1, 0.1, -0.1, 0.0]).view(1, 1, 2, 2)
    assert torch.allclose(adversarial, expected)


def test_pgd_l2_known_answer_on_linear_model() -> None:
    # The optimal L2 perturbation is -eps * w / ||w||, well inside [0,1] from 0.5.
    model, images, labels = _linear_case()
    w = torch.tensor([1.0, -2.0, 0.5, 0.0])
    adversarial = PGD(eps=0.2, norm="L2", steps=20, random_start=False)(model, images, labels)
    expected = images - 0.2 * (w / w.norm()).view(1, 1, 2, 2)
    assert torch.allclose(adversarial, expected, atol=1e-5)


def test_pgd_does_not_touch_parameter_gradients(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    model.zero_grad(set_to_none=True)
    PGD(eps=0.1, steps=3)(model, images[:8], labels[:8])
    assert all(parameter.grad is None for parameter in model.parameters())


def test_adversarial_loss_exceeds_clean_loss(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    adversarial = PGD(eps=0.1, steps=10)(model, images, labels)
    with torch.no_grad():
        assert F.cross_entropy(model(adversarial), labels) > F.cross_entropy(model(images), labels)


def test_unknown_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="L1"):
        threat_model("L1")
