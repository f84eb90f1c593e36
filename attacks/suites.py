"""Attack suites: the presets ``quick``, ``standard`` and ``thorough``.

A preset is a list of attacks, in order, at the evaluation's threat model. ``standard`` is the
default for promotion: it runs the attacks of AutoAttack's standard ensemble (APGD-CE, APGD-T,
FAB-T, Square) with fewer targets and queries, plus FGSM and PGD as the references the trust
checks compare against. ``thorough`` runs them at AutoAttack's budgets and more restarts, and
AutoAttack's own implementation beside them as an independent cross-check. ``quick`` is for CI
and development loops, not for promotion.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from torch import nn

from attacks.adaptive import BPDA, EOTPGD
from attacks.apgd import APGD, APGDTargeted
from attacks.autoattack_reference import AutoAttackReference
from attacks.cw import CarliniWagnerL2
from attacks.fab import FABTargeted
from attacks.fgsm import FGSM
from attacks.pgd import PGD
from attacks.square import SquareAttack
from attacks.transfer import TransferAttack

PRESETS = ("quick", "standard", "thorough")

# Accuracy-vs-eps curves per preset: (test images attacked, APGD-CE steps per eps).
CURVE_BUDGETS = {"quick": (100, 10), "standard": (200, 50), "thorough": (500, 100)}

# Black-box attacks: the trust checks expect them never to beat the white-box ones.
BLACK_BOX = frozenset({"square", "transfer"})

# Independent implementations run as a cross-check: the trust checks flag points they break that
# every one of iocane's own attacks missed.
REFERENCES = frozenset({"autoattack"})

# (weaker, stronger) pairs on the same loss: more steps and restarts, or a better optimiser of
# the same cross-entropy, must not raise robust accuracy (Carlini et al. 2019).
BUDGET_ORDER = (("pgd_short", "pgd"), ("pgd", "apgd_ce"))


def _pgd_pair(eps: float, norm: str, steps: int, restarts: int, seed: int) -> dict[str, PGD]:
    """PGD at the preset's budget and at a fifth of its steps with one restart: the
    steps-and-restarts monotonicity check compares the two."""
    return {
        "pgd_short": PGD(
            eps=eps, norm=norm, steps=max(2, steps // 5), restarts=1, seed=seed, name="pgd_short"
        ),
        "pgd": PGD(eps=eps, norm=norm, steps=steps, restarts=restarts, seed=seed),
    }


# Adaptive attacks: the suite adds them when the model checks call for them (a randomised forward
# pass: EOT; zero or non-finite input gradients: BPDA), and they can be asked for by name.
ADAPTIVE = ("eot_pgd", "bpda_pgd")
# Per preset: (PGD steps, EOT samples per step) for the adaptive attacks.
ADAPTIVE_BUDGETS = {"quick": (10, 8), "standard": (50, 16), "thorough": (100, 32)}


def adaptive_attack(name: str, preset: str, norm: str, eps: float, seed: int = 0) -> PGD:
    steps, samples = ADAPTIVE_BUDGETS[preset]
    if name == "eot_pgd":
        return EOTPGD(eps=eps, norm=norm, steps=steps, samples=samples, seed=seed)
    if name == "bpda_pgd":
        return BPDA(eps=eps, norm=norm, steps=steps, restarts=2, seed=seed)
    raise ValueError(f"unknown adaptive attack {name!r}; known: {', '.join(ADAPTIVE)}")


class AttackHookError(ValueError):
    """An attack named in ``evaluate.extra_attacks`` that cannot be loaded or built."""


def user_attack(spec: str, norm: str, eps: float, seed: int = 0) -> object:
    """An attack written for a user's own defence: ``package.module:factory``, where
    ``factory(eps=..., norm=..., seed=...)`` returns an attack of the package's call shape
    (``attack(model, images, labels) -> adversarial``, with a ``name``). It joins the suite
    under that name, and the worst case and the report with it."""
    module_name, _, factory_name = spec.partition(":")
    if os.getcwd() not in sys.path:  # a module beside params.yaml, as under python -m
        sys.path.append(os.getcwd())
    if not module_name or not factory_name:
        raise AttackHookError(f"{spec!r} is neither {' nor '.join(ADAPTIVE)} nor module:factory")
    try:
        factory: Callable[..., object] = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as error:
        raise AttackHookError(f"{spec!r} cannot be loaded: {error}") from None
    attack = factory(eps=eps, norm=norm, seed=seed)
    if not callable(attack) or not isinstance(getattr(attack, "name", None), str):
        raise AttackHookError(
            f"{spec!r} returned {type(attack).__name__}, not an attack: it must be callable as "
            "attack(model, images, labels) and have a name"
        )
    return attack


def build_suite(
    preset: str,
    norm: str,
    eps: float,
    seed: int = 0,
    surrogate: nn.Module | None = None,
    extra: tuple[str, ...] = (),
) -> dict[str, object]:
    """The attacks of a preset, by name, at ``norm`` and ``eps``; with a ``surrogate`` model
    (the natural warmup model), the transfer attack joins every preset but ``quick``. ``extra``
    adds attacks by name: an adaptive one (``eot_pgd``, ``bpda_pgd``) or a user's
    ``module:factory``."""
    if preset == "quick":
        suite = {
            "fgsm": FGSM(eps=eps, norm=norm),
            **_pgd_pair(eps, norm, steps=10, restarts=1, seed=seed),
            "apgd_ce": APGD(eps=eps, norm=norm, steps=20, seed=seed),
        }
    elif preset == "standard":
        suite = {
            "fgsm": FGSM(eps=eps, norm=norm),
            **_pgd_pair(eps, norm, steps=50, restarts=2, seed=seed),
            "apgd_ce": APGD(eps=eps, norm=norm, steps=100, seed=seed),
            "apgd_t": APGDTargeted(eps=eps, norm=norm, steps=100, n_target_classes=3, seed=seed),
            # Two targets, not APGD-T's three: on the Fashion-MNIST default FAB-T's third target
            # broke no point the first two missed, nor FAB-T any the APGDs missed, and it cost
            # 40% of FAB-T's time (docs/evaluation/autoattack.md; issue 19's 0.25x AutoAttack).
            "fab_t": FABTargeted(eps=eps, norm=norm, steps=100, n_target_classes=2, seed=seed),
            "square": SquareAttack(eps=eps, norm=norm, n_queries=1000, seed=seed),
        }
    elif preset == "thorough":
        suite = {
            "fgsm": FGSM(eps=eps, norm=norm),
            **_pgd_pair(eps, norm, steps=100, restarts=5, seed=seed),
            "pgd_margin": PGD(
                eps=eps,
                norm=norm,
                steps=100,
                restarts=2,
                loss="margin",
                seed=seed,
                name="pgd_margin",
            ),
            "apgd_ce": APGD(eps=eps, norm=norm, steps=100, restarts=5, seed=seed),
            "apgd_dlr": APGD(eps=eps, norm=norm, steps=100, loss="dlr", seed=seed, name="apgd_dlr"),
            "apgd_t": APGDTargeted(eps=eps, norm=norm, steps=100, n_target_classes=9, seed=seed),
            "fab_t": FABTargeted(eps=eps, norm=norm, steps=100, n_target_classes=9, seed=seed),
            "square": SquareAttack(eps=eps, norm=norm, n_queries=5000, seed=seed),
            "autoattack": AutoAttackReference(eps=eps, norm=norm, seed=seed),
        }
    else:
        raise ValueError(f"unknown suite preset {preset!r}; known: {', '.join(PRESETS)}")
    if norm != "Linf" and preset != "quick":  # C&W is an L2 attack: it joins the L2 suites
        search_steps, steps = (9, 200) if preset == "thorough" else (5, 100)
        suite["cw_l2"] = CarliniWagnerL2(eps=eps, steps=steps, search_steps=search_steps)
    if surrogate is not None and preset != "quick":
        steps = 100 if preset == "thorough" else 50
        suite["transfer"] = TransferAttack(
            source=surrogate, attack=PGD(eps=eps, norm=norm, steps=steps, seed=seed)
        )
    for spec in extra:
        attack = (
            adaptive_attack(spec, preset, norm, eps, seed)
            if spec in ADAPTIVE
            else user_attack(spec, norm, eps, seed)
        )
        if attack.name in suite:
            raise AttackHookError(f"{spec!r}: the suite already has an attack {attack.name!r}")
        suite[attack.name] = attack
    return suite
