"""The attack registry: every attack the evaluation knows, one entry each, in suite order.

An entry names an attack, its factory, the presets it joins with its budget in each, its kind,
the norms it supports and a one-line description. Everything else reads this table: the suites
(``attacks.suites.build_suite``, ``adaptive_attack``), the trust checks (which attacks are
black-box, which are references, which pairs must be monotone in budget:
``iocane.robustness.checks``), the accuracy-vs-eps curves' budget per preset, the property
tests (``tests/unit/attacks/test_registered_attacks.py``: every entry at every norm it supports)
and the docs' attack table (``docs/hooks/attack_table.py``).

Adding an attack is one module in ``attacks/`` and one ``AttackEntry`` in ``ATTACKS`` below
(with its import): see "Adding an attack" in ``docs/development.md``. A factory is called as
``factory(eps=..., norm=..., seed=..., **budget)`` and returns an attack of the package's call
shape whose ``name`` is the entry's name; an attack class with the fields ``eps``, ``norm`` and
``seed`` is its own factory. The order of ``ATTACKS`` is the order the suites run in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from torch import nn

from attacks.adaptive import BPDA, EOTPGD
from attacks.apgd import APGD, APGDTargeted
from attacks.autoattack_reference import AutoAttackReference
from attacks.cw import CarliniWagnerL2
from attacks.fab import FABTargeted
from attacks.fgsm import FGSM
from attacks.patch import PatchPGD, PatchRS
from attacks.pgd import PGD
from attacks.pgd_l0 import SparsePGD
from attacks.sparse_rs import SparseRS
from attacks.square import SquareAttack
from attacks.transfer import TransferAttack

# White-box attacks follow the model's gradients; black-box ones only query it (the trust checks
# expect them never to beat the white-box ones); a reference is an independent implementation run
# as a cross-check (the checks flag points it breaks that all of iocane's own attacks missed);
# adaptive ones join a suite only when the model checks call for them or ``extra_attacks`` names
# them, at their budget for the suite's preset.
Kind = Literal["white-box", "black-box", "reference", "adaptive"]
KINDS: tuple[Kind, ...] = ("white-box", "black-box", "reference", "adaptive")
# The threat models an attack can be registered for: the Lp balls (eps in [0, 1] pixel units) and
# the sparse ones, whose eps counts pixels (``attacks.threat``): L0 (any pixels, all channels of a
# pixel counting once) and patch (one square of that side, anywhere). The profile's other threats
# (corruptions, spatial) are not budgets around one image: ``attacks.threats``.
LP_NORMS = ("Linf", "L2")
NORMS = (*LP_NORMS, "L0", "patch")
Budget = Mapping[str, object]


@dataclass(frozen=True)
class Preset:
    """A preset's purpose (for the docs) and its accuracy-vs-eps curves' budget: test images
    attacked and APGD-CE steps per eps."""

    name: str
    purpose: str
    curve_images: int
    curve_steps: int


PRESETS_TABLE = (
    Preset("quick", "CI and development loops, not promotion", 100, 10),
    Preset("standard", "promotion (the default)", 200, 50),
    Preset("thorough", "final sign-off", 500, 100),
)
PRESETS = tuple(preset.name for preset in PRESETS_TABLE)


@dataclass(frozen=True)
class AttackEntry:
    """One attack: what builds it, where it runs and what the checks and docs say about it."""

    name: str
    factory: Callable[..., object]  # factory(eps=, norm=, seed=, **budget) -> attack
    kind: Kind
    description: str  # one line, for the docs' attack table
    budgets: Mapping[str, Budget]  # preset -> budget; the presets it joins (adaptive: when asked)
    norms: tuple[str, ...] = LP_NORMS
    # The property tests' budget, small enough for CPU tests; by default its first preset's.
    test_budget: Budget | None = None
    # Monotonicity (Carlini et al. 2019): this attack spends more steps, restarts or a better
    # optimiser on the same loss as the one named, so it must not leave more points robust.
    at_least_as_strong_as: str | None = None
    needs_surrogate: bool = False  # built on the natural model (``surrogate``): transfer

    def build(
        self, eps: float, norm: str, seed: int, budget: Budget, surrogate: nn.Module | None = None
    ) -> object:
        """The attack at ``norm`` and ``eps`` with ``budget`` (a preset's, or a test's)."""
        extra = {"source": surrogate} if self.needs_surrogate else {}
        return self.factory(eps=eps, norm=norm, seed=seed, **budget, **extra)

    def property_test_budget(self) -> Budget:
        """The budget of the property tests: ``test_budget``, or its first preset's."""
        if self.test_budget is not None:
            return self.test_budget
        return next(iter(self.budgets.values()))


def _fgsm(eps: float, norm: str, seed: int) -> FGSM:  # single step, nothing random: no seed
    return FGSM(eps=eps, norm=norm)


def _cw_l2(eps: float, norm: str, seed: int, steps: int, search_steps: int) -> CarliniWagnerL2:
    return CarliniWagnerL2(eps=eps, steps=steps, search_steps=search_steps)  # L2 only, no draws


def _transfer(eps: float, norm: str, seed: int, steps: int, source: nn.Module) -> TransferAttack:
    return TransferAttack(source=source, attack=PGD(eps=eps, norm=norm, steps=steps, seed=seed))


def _each(budget: Budget) -> dict[str, Budget]:
    return {preset: budget for preset in PRESETS}


ATTACKS: tuple[AttackEntry, ...] = (
    AttackEntry(
        name="fgsm",
        factory=_fgsm,
        kind="white-box",
        description="FGSM: one signed-gradient step (Goodfellow et al. 2015), the single-step "
        "reference",
        budgets=_each({}),
    ),
    AttackEntry(
        name="pgd_short",
        factory=partial(PGD, name="pgd_short"),
        kind="white-box",
        description="PGD at a fifth of the steps, one restart: the weaker side of the "
        "steps-and-restarts check",
        budgets={
            "quick": {"steps": 2, "restarts": 1},
            "standard": {"steps": 10, "restarts": 1},
            "thorough": {"steps": 20, "restarts": 1},
        },
    ),
    AttackEntry(
        name="pgd",
        factory=PGD,
        kind="white-box",
        description="PGD on cross-entropy from random starts (Madry et al. 2018)",
        budgets={
            "quick": {"steps": 10, "restarts": 1},
            "standard": {"steps": 50, "restarts": 2},
            "thorough": {"steps": 100, "restarts": 5},
        },
        test_budget={"steps": 5, "restarts": 2},
        at_least_as_strong_as="pgd_short",
    ),
    AttackEntry(
        name="pgd_margin",
        factory=partial(PGD, loss="margin", name="pgd_margin"),
        kind="white-box",
        description="PGD on the C&W margin loss",
        budgets={"thorough": {"steps": 100, "restarts": 2}},
        test_budget={"steps": 5, "restarts": 1},
    ),
    AttackEntry(
        name="apgd_ce",
        factory=APGD,
        kind="white-box",
        description="APGD-CE: step-size schedule and momentum (Croce & Hein 2020)",
        budgets={
            "quick": {"steps": 20},
            "standard": {"steps": 100},
            "thorough": {"steps": 100, "restarts": 5},
        },
        test_budget={"steps": 10, "restarts": 2},
        at_least_as_strong_as="pgd",
    ),
    AttackEntry(
        name="apgd_dlr",
        factory=partial(APGD, loss="dlr", name="apgd_dlr"),
        kind="white-box",
        description="APGD on the scale-invariant DLR loss",
        budgets={"thorough": {"steps": 100}},
        test_budget={"steps": 10},
    ),
    AttackEntry(
        name="apgd_t",
        factory=APGDTargeted,
        kind="white-box",
        description="APGD-T: targeted DLR against the most likely other classes",
        budgets={
            "standard": {"steps": 100, "n_target_classes": 3},
            "thorough": {"steps": 100, "n_target_classes": 9},
        },
        test_budget={"steps": 10, "n_target_classes": 2},
    ),
    AttackEntry(
        name="fab_t",
        factory=FABTargeted,
        kind="white-box",
        description="FAB-T: minimal-norm steps onto the linearised boundary (Croce & Hein 2020)",
        # Two targets in standard, not APGD-T's three: on the Fashion-MNIST default FAB-T's
        # third target broke no point the first two missed, nor FAB-T any the APGDs missed, and
        # it cost 40% of FAB-T's time (docs/evaluation/autoattack.md; issue 19's 0.25x
        # AutoAttack).
        budgets={
            "standard": {"steps": 100, "n_target_classes": 2},
            "thorough": {"steps": 100, "n_target_classes": 9},
        },
        test_budget={"steps": 10, "n_target_classes": 2},
    ),
    AttackEntry(
        name="square",
        factory=SquareAttack,
        kind="black-box",
        description="Square: score-based random search (Andriushchenko et al. 2020)",
        budgets={"standard": {"n_queries": 1000}, "thorough": {"n_queries": 5000}},
        test_budget={"n_queries": 100},
    ),
    AttackEntry(
        name="autoattack",
        factory=AutoAttackReference,
        kind="reference",
        description="AutoAttack's own code (pyautoattack, standard version) as a cross-check",
        budgets={"thorough": {}},
        test_budget={"version": "custom", "attacks": ("apgd-ce",)},
    ),
    AttackEntry(
        name="cw_l2",
        factory=_cw_l2,
        kind="white-box",
        description="C&W L2: minimal-distance search, bounded to eps (Carlini & Wagner 2017)",
        budgets={
            "standard": {"steps": 100, "search_steps": 5},
            "thorough": {"steps": 200, "search_steps": 9},
        },
        norms=("L2",),
        test_budget={"steps": 30, "search_steps": 3},
    ),
    AttackEntry(
        name="transfer",
        factory=_transfer,
        kind="black-box",
        description="PGD crafted on the natural model, applied to the hardened one",
        budgets={"standard": {"steps": 50}, "thorough": {"steps": 100}},
        test_budget={"steps": 5},
        needs_surrogate=True,
    ),
    # L0 (eps counts pixels): the white-box one first, then the score-based search, which on
    # sparse threats is often the stronger of the two (Croce et al. 2022; the trust checks
    # know: ``iocane.robustness.checks.comparison_flags``).
    AttackEntry(
        name="pgd_l0",
        factory=SparsePGD,
        kind="white-box",
        description="sPGD: sparse PGD over magnitude and a top-k pixel mask (Zhong et al. 2024)",
        budgets={
            "quick": {"steps": 20},
            "standard": {"steps": 100},
            "thorough": {"steps": 300, "restarts": 3},
        },
        norms=("L0",),
        test_budget={"steps": 20},
    ),
    AttackEntry(
        name="sparse_rs",
        factory=SparseRS,
        kind="black-box",
        description="Sparse-RS: random search over k pixels at the box's vertices "
        "(Croce et al. 2022)",
        budgets={
            "quick": {"n_queries": 300},
            "standard": {"n_queries": 1000},
            "thorough": {"n_queries": 3000, "restarts": 3},
        },
        norms=("L0",),
        test_budget={"n_queries": 100},
    ),
    # Patch (eps: the square's side in pixels): the white-box one first, then Patch-RS, which
    # searches locations a gradient cannot (Croce et al. 2022).
    AttackEntry(
        name="patch_pgd",
        factory=PatchPGD,
        kind="white-box",
        description="Patch-PGD: signed-gradient ascent on a square patch's content at candidate "
        "places (the gradient's heaviest window, then random ones)",
        # On digits the number of places tried mattered more than the steps at each.
        budgets={
            "quick": {"steps": 5, "locations": 4},
            "standard": {"steps": 5, "locations": 16},
            "thorough": {"steps": 10, "locations": 32, "restarts": 2},
        },
        norms=("patch",),
        test_budget={"steps": 5, "locations": 2},
    ),
    AttackEntry(
        name="patch_rs",
        factory=PatchRS,
        kind="black-box",
        description="Patch-RS: random search alternating a square patch's place and its content "
        "(squares at the box's vertices; Croce et al. 2022)",
        # Short searches restarted beat one long one on digits (a search settles on one place).
        budgets={
            "quick": {"n_queries": 50, "restarts": 2},
            "standard": {"n_queries": 100, "restarts": 5},
            "thorough": {"n_queries": 500, "restarts": 10},
        },
        norms=("patch",),
        test_budget={"n_queries": 50},
    ),
    AttackEntry(
        name="eot_pgd",
        factory=EOTPGD,
        kind="adaptive",
        description="EOT-PGD: the gradient averaged over passes of a randomised model "
        "(Athalye et al. 2018)",
        budgets={
            "quick": {"steps": 10, "samples": 8},
            "standard": {"steps": 50, "samples": 16},
            "thorough": {"steps": 100, "samples": 32},
        },
        test_budget={"steps": 5, "samples": 2},
    ),
    AttackEntry(
        name="bpda_pgd",
        factory=BPDA,
        kind="adaptive",
        description="BPDA-PGD: steps without gradients passed back as the identity "
        "(Athalye et al. 2018)",
        budgets={
            "quick": {"steps": 10, "restarts": 2},
            "standard": {"steps": 50, "restarts": 2},
            "thorough": {"steps": 100, "restarts": 2},
        },
        test_budget={"steps": 5, "restarts": 1},
    ),
)


class UnknownAttack(ValueError):
    """A name that no registry entry has."""


def entries() -> tuple[AttackEntry, ...]:
    """The table, read at call time (a test may patch ``ATTACKS``), checked for consistency."""
    names = [entry.name for entry in ATTACKS]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"attacks registered twice: {', '.join(duplicates)}")
    for entry in ATTACKS:
        unknown = (set(entry.budgets) - set(PRESETS)) | (set(entry.norms) - set(NORMS))
        if unknown or entry.kind not in KINDS:
            raise ValueError(f"attack {entry.name!r}: unknown preset, norm or kind {unknown}")
    return ATTACKS


def entry(name: str) -> AttackEntry:
    for registered in entries():
        if registered.name == name:
            return registered
    known = ", ".join(registered.name for registered in entries())
    raise UnknownAttack(f"unknown attack {name!r}; known: {known}")


def names_of_kind(kind: Kind) -> tuple[str, ...]:
    """The names of the attacks of ``kind``, in registry order."""
    return tuple(registered.name for registered in entries() if registered.kind == kind)


def budget_order() -> tuple[tuple[str, str], ...]:
    """The (weaker, stronger) pairs of the monotonicity check, in registry order."""
    return tuple(
        (registered.at_least_as_strong_as, registered.name)
        for registered in entries()
        if registered.at_least_as_strong_as is not None
    )


def preset(name: str) -> Preset:
    for known in PRESETS_TABLE:
        if known.name == name:
            return known
    raise ValueError(f"unknown suite preset {name!r}; known: {', '.join(PRESETS)}")


def curve_budget(preset_name: str) -> tuple[int, int]:
    """(test images attacked, APGD-CE steps per eps) of a preset's accuracy-vs-eps curves."""
    known = preset(preset_name)
    return known.curve_images, known.curve_steps


@dataclass(frozen=True)
class Threat:
    """What a suite is built for: the threat model, the seed, and the natural model if any."""

    norm: str
    eps: float
    seed: int = 0
    surrogate: nn.Module | None = field(default=None, compare=False)


def preset_attacks(preset_name: str, threat: Threat) -> dict[str, object]:
    """The attacks a preset runs at ``threat``, in registry order: every entry that joins the
    preset, supports the norm, and (transfer) has its surrogate; adaptive ones join on demand."""
    preset(preset_name)  # an unknown preset fails here
    suite = {}
    for registered in entries():
        if registered.kind == "adaptive" or preset_name not in registered.budgets:
            continue
        if threat.norm not in registered.norms:
            continue
        if registered.needs_surrogate and threat.surrogate is None:
            continue
        budget = registered.budgets[preset_name]
        suite[registered.name] = registered.build(
            threat.eps, threat.norm, threat.seed, budget, threat.surrogate
        )
    return suite
