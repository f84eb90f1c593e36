"""TRADES' training attack (``attacks.trades``): inside the eps ball and [0, 1] at both norms,
deterministic under its seed, and it raises the KL term it ascends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attacks import TradesAttack
from tests.helpers.models import TinyLinear


def _case() -> tuple[TinyLinear, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    model = TinyLinear(3 * torch.randn(3, 4, generator=generator), torch.zeros(3))
    images = torch.rand(8, 1, 2, 2, generator=generator)
    return model, images, torch.randint(0, 3, (8,), generator=generator)


def _kl(model: TinyLinear, images: torch.Tensor, adversarial: torch.Tensor) -> float:
    clean, adv = F.log_softmax(model(images), 1), F.log_softmax(model(adversarial), 1)
    return F.kl_div(adv, clean, reduction="sum", log_target=True).item()


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 0.1), ("L2", 0.5)])
def test_trades_attack_stays_in_budget_is_seeded_and_ascends_the_kl(norm: str, eps: float) -> None:
    model, images, labels = _case()
    attack = TradesAttack(eps=eps, norm=norm, steps=5, step_size=eps / 4, seed=3)
    adversarial = attack(model, images, labels)
    delta = (adversarial - images).flatten(1)
    size = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    assert size.max() <= eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert torch.equal(adversarial, attack(model, images, labels)), "same seed, same examples"
    one_step = TradesAttack(eps=eps, norm=norm, steps=1, step_size=eps / 4, seed=3)
    assert _kl(model, images, adversarial) > _kl(model, images, one_step(model, images, labels))
