"""The threat profile's table: every threat ``evaluate.threats`` can name, and what attacks it.

A threat is a named entry with a budget from the params: the Lp balls (``linf``, ``l2``: eps in
pixel units), the sparse threats (``l0``: pixels changed; ``patch``: the side of one square
placed anywhere), the common corruptions (``corruptions``: severities, Hendrycks & Dietterich
2019) and the spatial one (``spatial``: a grid of rotations and translations, Engstrom et al.
2019). ``members(budget, preset, seed)`` gives the attacks of the threat, each of the package's
call shape; the profile (``iocane.robustness.threat_profile``) runs them all on every
clean-correct point and takes, per point, the worst case over them, or for the corruptions the
mean over corruptions and severities.

The norm-based threats' members are the attack registry's (``attacks.registry.preset_attacks``)
at the threat's norm: adding an L0 attack to the registry adds it to the ``l0`` threat. The
budget checks and texts are ``iocane.base.threat_budgets``' (the config reads them there without
torch); this table adds the members and the descriptions, in the same order.

Presets keep their meaning: ``quick`` (CI and development loops) runs the corruptions of one
family each and a coarse spatial grid; ``standard`` and ``thorough`` every corruption and
Engstrom et al.'s grid (finer at ``thorough``). A spatial budget's ``rotations`` and
``translations`` override the preset's grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attacks.registry import Threat, preset, preset_attacks
from iocane.base.threat_budgets import BUDGETS, BudgetError, Measure, ThreatBudget

__all__ = ["THREATS", "BudgetError", "ThreatEntry", "threat_entry"]

# ``quick`` runs one corruption per family of Hendrycks & Dietterich's four (noise, blur,
# weather, digital): a CI loop's figure of each kind of shift, without the costly ones. On 1,000
# 28x28 images at one severity (2 busy CPU cores) all 14 took 8.6 s, these four 1.3 s (glass
# blur 2.0 s, JPEG 1.4 s, snow 1.3 s, elastic 1.2 s alone); on the 8x8 digits 0.7 s in all. Its
# mean is over these four, which the profile's member names show.
QUICK_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "fog", "contrast")
# Spatial grid per preset when the budget gives none: (angles, shifts per axis). ``standard`` is
# Engstrom et al. 2019's MNIST grid (31 angles in [-30, 30] degrees, 5 shifts per axis: 775
# points); ``quick`` a coarse one (45 points); ``thorough`` a finer one (2,989 points).
SPATIAL_GRIDS = {"quick": (5, 3), "standard": (31, 5), "thorough": (61, 7)}


def _norm_members(norm: str) -> Callable[[Any, str, int], dict[str, object]]:
    def members(budget: Any, preset_name: str, seed: int) -> dict[str, object]:
        attacks = preset_attacks(preset_name, Threat(norm=norm, eps=budget, seed=seed))
        if not attacks:
            raise ValueError(f"no registered attack joins preset {preset_name!r} at norm {norm}")
        return attacks

    return members


def _corruption_members(budget: Any, preset_name: str, seed: int) -> dict[str, object]:
    from attacks.corruptions import CORRUPTIONS, Corruption  # lands beside this table

    preset(preset_name)
    names = CORRUPTIONS
    if preset_name == "quick":
        names = tuple(name for name in CORRUPTIONS if name in QUICK_CORRUPTIONS)
    members = (Corruption(name, int(severity), seed) for name in names for severity in budget)
    return {member.name: member for member in members}


def _spatial_members(budget: Any, preset_name: str, seed: int) -> dict[str, object]:
    from attacks.spatial import SpatialGrid  # lands beside this table

    preset(preset_name)
    rotations, translations = SPATIAL_GRIDS[preset_name]
    grid = SpatialGrid(
        rotate=float(budget["rotate"]),
        translate=float(budget["translate"]),
        rotations=int(budget.get("rotations", rotations)),
        translations=int(budget.get("translations", translations)),
        seed=seed,
    )
    return {grid.name: grid}


@dataclass(frozen=True)
class ThreatEntry:
    """One threat: its budget rules (``iocane.base.threat_budgets``), a one-line description
    and what builds its members."""

    budget_rules: ThreatBudget
    description: str
    build_members: Callable[[Any, str, int], dict[str, object]]

    @property
    def name(self) -> str:
        return self.budget_rules.name

    @property
    def norm(self) -> str | None:
        """The registry norm of its members (Linf, L2, L0, patch); None when not norm-based."""
        return self.budget_rules.norm

    @property
    def measure(self) -> Measure:
        """How members combine: "worst case" per sample, or "mean" (the corruptions)."""
        return self.budget_rules.measure

    def check_budget(self, budget: Any) -> Any:
        """The budget if it can run, else a ``BudgetError`` (a ValueError) naming the problem."""
        return self.budget_rules.check(budget)

    def budget_text(self, budget: Any) -> str:
        """The budget as the report states it: "eps 0.1", "12 pixels", "5x5 patch", ..."""
        return self.budget_rules.text(self.check_budget(budget))

    def members(self, budget: Any, preset_name: str, seed: int) -> dict[str, object]:
        """The attacks of this threat at ``budget`` and the preset's budget, by name."""
        return self.build_members(self.check_budget(budget), preset_name, seed)


_DESCRIPTIONS = {
    "linf": ("Linf ball: every pixel moves by at most eps", _norm_members("Linf")),
    "l2": ("L2 ball: the perturbation's Euclidean length at most eps", _norm_members("L2")),
    "l0": (
        "L0: at most this many pixels changed, each to anything in [0, 1] (all channels of a "
        "pixel count once)",
        _norm_members("L0"),
    ),
    "patch": (
        "patch: one square of this side, placed anywhere, its content free (a digital sticker)",
        _norm_members("patch"),
    ),
    "corruptions": (
        "common corruptions at these severities: each corruption's mean over them, and the mean "
        "over all (quick: one corruption per family)",
        _corruption_members,
    ),
    "spatial": (
        "rotations and translations: the worst point of a grid (quick: a coarse grid)",
        _spatial_members,
    ),
}

THREATS: tuple[ThreatEntry, ...] = tuple(
    ThreatEntry(rules, *_DESCRIPTIONS[rules.name]) for rules in BUDGETS
)


def threat_entry(name: str) -> ThreatEntry:
    """The entry of ``name``; an unknown name is a ``BudgetError`` listing the known ones."""
    for entry in THREATS:
        if entry.name == name:
            return entry
    raise BudgetError(f"unknown threat {name!r} (known: {', '.join(e.name for e in THREATS)})")
