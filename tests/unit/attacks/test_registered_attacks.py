"""Every registered attack at every norm it supports (``attacks.registry``): inside the eps ball
and [0, 1], deterministic for a seed (``tests/helpers/attack_properties.py``); and the registry's
own consistency with the presets, the config and the trust checks."""

from __future__ import annotations

import typing

import pytest

from attacks import registry
from attacks.suites import build_suite
from iocane.base.config import EvaluateConfig
from tests.helpers.attack_properties import EPS, check_properties, registered_cases

N_IMAGES = 32  # enough for an attack to fool some points of the natural model, fast on CPU


@pytest.mark.parametrize(("entry", "norm"), registered_cases())
def test_registered_attack_stays_in_budget_and_is_deterministic(
    entry, norm, trained_digits_model
) -> None:
    model, images, labels = trained_digits_model
    check_properties(entry, norm, model, images[:N_IMAGES], labels[:N_IMAGES])


def test_the_config_offers_the_registry_presets() -> None:
    annotation = EvaluateConfig.model_fields["preset"].annotation
    assert typing.get_args(annotation) == registry.PRESETS


def test_every_entry_joins_a_preset_it_knows_and_the_checks_name_registered_attacks() -> None:
    names = [entry.name for entry in registry.entries()]
    for entry in registry.entries():
        assert entry.budgets, f"{entry.name} joins no preset and has no budget"
        assert entry.description and "\n" not in entry.description
    for weaker, stronger in registry.budget_order():
        assert names.index(weaker) < names.index(stronger)  # the weaker one runs first
    assert registry.budget_order() == (("pgd_short", "pgd"), ("pgd", "apgd_ce"))
    black_box = {"square", "transfer", "sparse_rs", "patch_rs"}
    assert set(registry.names_of_kind("black-box")) == black_box
    assert registry.names_of_kind("reference") == ("autoattack",)


@pytest.mark.parametrize("preset", registry.PRESETS)
@pytest.mark.parametrize("norm", registry.NORMS)
def test_a_preset_runs_its_registered_attacks_in_registry_order(
    preset, norm, trained_digits_model
) -> None:
    # Each norm at its own kind of budget: eps counts pixels for L0 and patch.
    suite = build_suite(preset, norm, EPS[norm], surrogate=trained_digits_model[0])
    expected = [
        entry.name
        for entry in registry.entries()
        if preset in entry.budgets and norm in entry.norms and entry.kind != "adaptive"
    ]
    assert list(suite) == expected
    assert all(attack.name == name for name, attack in suite.items())


def test_a_registry_with_a_name_twice_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(registry, "ATTACKS", (*registry.ATTACKS, registry.entry("pgd")))
    with pytest.raises(ValueError, match="registered twice: pgd"):
        build_suite("quick", "Linf", 0.1)


def test_an_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown suite preset 'fast'"):
        build_suite("fast", "Linf", 0.1)
