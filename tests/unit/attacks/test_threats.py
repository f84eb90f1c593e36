"""The threat table (attacks/threats.py): its budget checks name the problem, its texts state
the budget, its members follow the preset, and it agrees with the config's names."""

from __future__ import annotations

import importlib.util

import pytest

from attacks.registry import Threat as RegistryThreat
from attacks.registry import entries, preset_attacks
from attacks.threats import QUICK_CORRUPTIONS, SPATIAL_GRIDS, THREATS, threat_entry
from iocane.base.config.evaluation import ThreatsConfig, ThreatThresholds
from iocane.base.threat_budgets import THREAT_NAMES, BudgetError, check_threats

SPATIAL = {"rotate": 30, "translate": 3}


def test_the_table_is_in_profile_order_and_matches_the_config() -> None:
    names = tuple(entry.name for entry in THREATS)
    assert names == ("linf", "l2", "l0", "patch", "corruptions", "spatial") == THREAT_NAMES
    assert tuple(ThreatsConfig.model_fields) == names == tuple(ThreatThresholds.model_fields)
    assert {entry.name: entry.norm for entry in THREATS} == {
        "linf": "Linf",
        "l2": "L2",
        "l0": "L0",
        "patch": "patch",
        "corruptions": None,
        "spatial": None,
    }
    assert {entry.name: entry.measure for entry in THREATS}["corruptions"] == "mean"
    assert {entry.measure for entry in THREATS if entry.name != "corruptions"} == {"worst case"}
    assert all(entry.description for entry in THREATS)


@pytest.mark.parametrize(
    ("name", "budget", "text"),
    [
        ("linf", 0.1, "eps 0.1"),
        ("l2", 1.5, "eps 1.5"),
        ("l0", 12, "12 pixels"),
        ("l0", 1, "1 pixel"),
        ("l0", 12.0, "12 pixels"),
        ("patch", 5, "5x5 patch"),
        ("corruptions", [1, 3, 5], "severities 1, 3, 5"),
        ("corruptions", [2], "severity 2"),
        ("spatial", SPATIAL, "rotations up to 30 deg, shifts up to 3 px"),
        (
            "spatial",
            {**SPATIAL, "rotations": 7, "translations": 3},
            "rotations up to 30 deg, shifts up to 3 px (grid: 7 angles, 3 shifts per axis)",
        ),
    ],
)
def test_budget_text(name: str, budget: object, text: str) -> None:
    assert threat_entry(name).budget_text(budget) == text


@pytest.mark.parametrize(
    ("name", "budget", "key", "words"),
    [
        ("linf", 0, "", "outside (0, 1]"),
        ("linf", 1.5, "", "outside (0, 1]"),
        ("linf", "0.1", "", "expected a finite number"),
        ("l2", -1, "", "above 0"),
        ("l2", True, "", "expected a finite number"),
        ("l0", 2.5, "", "whole number of pixels"),
        ("l0", 0, "", "whole number of pixels"),
        ("patch", float("nan"), "", "finite number"),
        ("corruptions", 3, "", "list of severities"),
        ("corruptions", [], "", "list of severities"),
        ("corruptions", [0, 3], "", "severity 0 is outside 1 to 5"),
        ("corruptions", [6], "", "severity 6 is outside 1 to 5"),
        ("corruptions", [1.0], "", "not a whole number"),
        ("corruptions", [3, 3], "", "listed twice"),
        ("spatial", 30, "", "expected a mapping"),
        ("spatial", {"rotate": 30}, "translate", "missing"),
        ("spatial", {**SPATIAL, "grid": 3}, "grid", "unknown key"),
        ("spatial", {"rotate": 200, "translate": 3}, "rotate", "outside [0, 180]"),
        ("spatial", {"rotate": 30, "translate": -1}, "translate", "below 0"),
        ("spatial", {"rotate": 0, "translate": 0}, "rotate", "both 0"),
        ("spatial", {**SPATIAL, "rotations": 0}, "rotations", "grid points"),
    ],
)
def test_bad_budgets_name_the_problem(name: str, budget: object, key: str, words: str) -> None:
    with pytest.raises(BudgetError) as raised:  # a ValueError
        threat_entry(name).check_budget(budget)
    assert isinstance(raised.value, ValueError)
    assert raised.value.key == key and words in str(raised.value), str(raised.value)
    # The profile's check names the threat, then the part at fault.
    with pytest.raises(BudgetError) as profiled:
        check_threats({name: budget})
    assert profiled.value.key == ".".join(filter(None, (name, key)))


def test_unknown_threat_lists_the_known_ones() -> None:
    with pytest.raises(BudgetError, match=r"unknown threat 'l1'.*linf, l2, l0, patch"):
        threat_entry("l1")
    with pytest.raises(BudgetError) as raised:
        check_threats({"linf": 0.1, "l1": 1})
    assert raised.value.key == "l1"


@pytest.mark.parametrize(("name", "norm"), [("linf", "Linf"), ("l2", "L2")])
@pytest.mark.parametrize("preset", ["quick", "standard", "thorough"])
def test_norm_threats_take_the_registry_preset(name: str, norm: str, preset: str) -> None:
    members = threat_entry(name).members(0.3, preset, seed=4)
    expected = preset_attacks(preset, RegistryThreat(norm=norm, eps=0.3, seed=4))
    assert list(members) == list(expected)
    assert members == expected  # frozen dataclasses: same budget, eps and seed
    assert all(member.eps == 0.3 and member.norm == norm for member in members.values())
    if preset == "quick":  # quick keeps its meaning: no costly member joins it
        assert "square" not in members and "apgd_t" not in members


@pytest.mark.parametrize(("name", "norm"), [("l0", "L0"), ("patch", "patch")])
def test_sparse_threats_take_their_norms_registered_attacks(name: str, norm: str) -> None:
    registered = [entry.name for entry in entries() if norm in entry.norms]
    if not registered:
        pytest.skip(f"no attack registered for {norm} yet")
    members = threat_entry(name).members(3, "thorough", seed=0)
    assert set(members) <= set(registered) and members
    assert all(member.norm == norm and member.eps == 3 for member in members.values())


def test_a_norm_without_attacks_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import attacks.registry

    lp_only = tuple(entry for entry in attacks.registry.ATTACKS if "L0" not in entry.norms)
    monkeypatch.setattr(attacks.registry, "ATTACKS", lp_only)
    with pytest.raises(ValueError, match="no registered attack joins preset 'quick' at norm L0"):
        threat_entry("l0").members(2, "quick", seed=0)


def test_an_unknown_preset_fails_for_every_threat() -> None:
    with pytest.raises(ValueError, match="unknown suite preset"):
        threat_entry("linf").members(0.1, "fast", seed=0)


needs_corruptions = pytest.mark.skipif(
    importlib.util.find_spec("attacks.corruptions") is None, reason="attacks.corruptions not here"
)
needs_spatial = pytest.mark.skipif(
    importlib.util.find_spec("attacks.spatial") is None, reason="attacks.spatial not here"
)


@needs_corruptions
def test_corruption_members_per_severity_and_preset() -> None:
    from attacks.corruptions import CORRUPTIONS

    standard = threat_entry("corruptions").members([1, 3], "standard", seed=2)
    assert list(standard) == [f"{name}_s{s}" for name in CORRUPTIONS for s in (1, 3)]
    assert all(member.seed == 2 for member in standard.values())
    quick = threat_entry("corruptions").members([5], "quick", seed=0)
    expected = [f"{name}_s5" for name in CORRUPTIONS if name in QUICK_CORRUPTIONS]
    assert list(quick) == expected and 0 < len(quick) < len(CORRUPTIONS)


@needs_spatial
@pytest.mark.parametrize("preset", ["quick", "standard", "thorough"])
def test_spatial_grid_from_the_budget_else_the_preset(preset: str) -> None:
    (grid,) = threat_entry("spatial").members(SPATIAL, preset, seed=1).values()
    assert (grid.rotate, grid.translate) == (30, 3)
    assert (grid.rotations, grid.translations) == SPATIAL_GRIDS[preset]
    given = {**SPATIAL, "rotations": 3, "translations": 1}
    (grid,) = threat_entry("spatial").members(given, preset, seed=1).values()
    assert (grid.rotations, grid.translations, grid.name) == (3, 1, "spatial_grid")
