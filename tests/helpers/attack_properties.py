"""The properties every registered attack must have, as checks a test can run on any entry.

``tests/unit/attacks/test_registered_attacks.py`` runs them on every entry of
``attacks.registry.ATTACKS`` at every norm it supports (``registered_cases``), and
``test_adding_an_attack.py`` on the docs' worked example: an attack added to the registry is
tested without being listed here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import registry, threat_model

# On 8x8 digits each fools a natural model often, not always; L0 and patch count pixels.
EPS = {"Linf": 0.1, "L2": 0.5, "L0": 3, "patch": 3}
SEED = 7


def registered_cases() -> list:
    """One pytest param per registered attack and norm it supports, read from the table now."""
    return [
        pytest.param(entry, norm, id=f"{entry.name}-{norm}")
        for entry in registry.entries()
        for norm in entry.norms
    ]


def build_for_test(entry: registry.AttackEntry, norm: str, surrogate: nn.Module, seed: int = SEED):
    """The entry's attack at the test budget; a transfer attack crafts on ``surrogate``."""
    return entry.build(EPS[norm], norm, seed, entry.property_test_budget(), surrogate)


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def check_stays_in_budget(
    entry: registry.AttackEntry,
    norm: str,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Named as registered, at the asked threat model; its examples have the images' shape, lie
    in [0, 1] and in the eps ball; it leaves the model's mode and parameter gradients alone; and
    on a natural model it fools some points (it does something). Returns the examples."""
    attack = build_for_test(entry, norm, model)
    assert attack.name == entry.name, f"{entry.name}: the attack calls itself {attack.name!r}"
    assert (attack.norm, attack.eps) == (norm, EPS[norm])
    model.eval().zero_grad(set_to_none=True)
    adversarial = attack(model, images, labels)
    assert not model.training, f"{entry.name} left the model in train mode"
    assert all(parameter.grad is None for parameter in model.parameters())
    assert adversarial.shape == images.shape
    assert torch.isfinite(adversarial).all()
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    distance = threat_model(norm).norm(adversarial - images)
    assert distance.max() <= EPS[norm] * (1 + 1e-5), f"{entry.name} leaves the {norm} ball"
    assert _accuracy(model, adversarial, labels) < _accuracy(model, images, labels)
    return adversarial


def check_deterministic(
    entry: registry.AttackEntry,
    norm: str,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    first: torch.Tensor | None = None,
) -> None:
    """Two attacks built with the same seed give the same examples, bit for bit, whatever the
    global random state between them (``first``: the examples of a run already made)."""
    if first is None:
        first = build_for_test(entry, norm, model)(model, images, labels)
    torch.manual_seed(12345)  # the global generator moves on: the attack must not depend on it
    second = build_for_test(entry, norm, model)(model, images, labels)
    assert torch.equal(first, second), f"{entry.name} ({norm}) differs under the same seed"


def check_properties(
    entry: registry.AttackEntry,
    norm: str,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> None:
    """``check_stays_in_budget`` and ``check_deterministic``, in two runs of the attack."""
    first = check_stays_in_budget(entry, norm, model, images, labels)
    check_deterministic(entry, norm, model, images, labels, first=first)
