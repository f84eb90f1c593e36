"""Attack suites: the presets ``quick``, ``standard`` and ``thorough``.

A preset is a list of attacks, in order, at the evaluation's threat model. ``standard`` is the
default for promotion: it runs the attacks of AutoAttack's standard ensemble (APGD-CE, APGD-T,
FAB-T, Square) with fewer targets and queries, plus FGSM and PGD as the references the trust
checks compare against. ``thorough`` runs them at AutoAttack's budgets and more restarts, and
AutoAttack's own implementation beside them as an independent cross-check. ``quick`` is for CI
and development loops, not for promotion. Which attack joins which preset, at what budget and in
what order, is the attack registry's (``attacks.registry``); this module builds suites from it
and adds the attacks asked for by name.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from torch import nn

from attacks import registry
from attacks.registry import PRESETS, Threat, preset_attacks

__all__ = ["PRESETS", "AttackHookError", "adaptive_attack", "build_suite", "user_attack"]


def adaptive_attack(name: str, preset: str, norm: str, eps: float, seed: int = 0) -> object:
    """The adaptive attack ``name`` (see ``attacks.adaptive``) at its budget for ``preset``."""
    adaptive = registry.names_of_kind("adaptive")
    if name not in adaptive:
        raise ValueError(f"unknown adaptive attack {name!r}; known: {', '.join(adaptive)}")
    entry = registry.entry(name)
    return entry.build(eps, norm, seed, entry.budgets[preset])


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
        adaptive = " nor ".join(registry.names_of_kind("adaptive"))
        raise AttackHookError(f"{spec!r} is neither {adaptive} nor module:factory")
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
    suite = preset_attacks(preset, Threat(norm=norm, eps=eps, seed=seed, surrogate=surrogate))
    for spec in extra:
        attack = (
            adaptive_attack(spec, preset, norm, eps, seed)
            if spec in registry.names_of_kind("adaptive")
            else user_attack(spec, norm, eps, seed)
        )
        if attack.name in suite:
            raise AttackHookError(f"{spec!r}: the suite already has an attack {attack.name!r}")
        suite[attack.name] = attack
    return suite
