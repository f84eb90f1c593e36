"""Attack suites: the presets ``quick``, ``standard`` and ``thorough``.

A preset is a list of attacks, in order, at the evaluation's threat model. ``standard`` is the
default for promotion: it runs the attacks of AutoAttack's standard ensemble (APGD-CE, APGD-T,
FAB-T, Square) with fewer targets and queries, plus FGSM and PGD as the references the trust
checks compare against. ``thorough`` runs them at AutoAttack's budgets and more restarts, and
AutoAttack's own implementation beside them as an independent cross-check. ``quick`` is for CI
and development loops, not for promotion.
"""

from __future__ import annotations

from torch import nn

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


def build_suite(
    preset: str, norm: str, eps: float, seed: int = 0, surrogate: nn.Module | None = None
) -> dict[str, object]:
    """The attacks of a preset, by name, at ``norm`` and ``eps``; with a ``surrogate`` model
    (the natural warmup model), the transfer attack joins every preset but ``quick``."""
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
            "fab_t": FABTargeted(eps=eps, norm=norm, steps=100, n_target_classes=3, seed=seed),
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
    return suite
