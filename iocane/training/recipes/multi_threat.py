"""``multi_threat``: adversarial training against several threats (issue 31), the ``pgd`` loss
on examples of the threats listed in ``train.threats``.

``multi`` alternates Linf and L2; this recipe takes any of the threats that have a gradient
attack, each with the budget format of ``evaluate.threats``: ``linf`` and ``l2`` (PGD, Madry's
step rule 2.5 * eps / steps), ``l0`` (sPGD, ``attacks.pgd_l0``), ``patch`` (``PatchPGD`` at the
input gradient's heaviest window) and ``spatial`` (``SpatialPGD`` over angle and shifts). Every
iterative member runs ``train.steps`` steps and one start, so a batch costs about what a ``pgd``
batch costs (``worst``: one such attack per threat).

``train.threat_mode``:

- ``mixed``: batch ``b`` trains on threat ``b mod len(threats)`` in the table's order (Tramer &
  Boneh 2019's "avg"-style mixing, one threat per batch). The batch index is the only state it
  carries, so a resumed epoch picks it up where it stopped.
- ``worst``: every threat attacks every batch; per sample the example with the highest
  cross-entropy is trained on (Tramer & Boneh's "max" strategy, Maini et al. 2020's "worst").

The eps ramp scales every budget: the Lp radii and the spatial box linearly, the pixel counts
(l0, patch) rounded, so the first batches of a ramp may leave a pixel threat out (clean images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attacks import PGD, Attack
from attacks.patch import PatchPGD
from attacks.pgd_l0 import SparsePGD
from attacks.spatial import SpatialPGD
from iocane.training.recipes.pgd import AdversarialLossRecipe

LP_STEP = 2.5  # Madry's rule of thumb: step = 2.5 * eps / steps
THREAT_ORDER = ("linf", "l2", "l0", "patch", "spatial")  # the threat table's order


def threat_budgets(threats: Any) -> dict[str, Any]:
    """The threats of ``train.threats`` (the config section or a plain mapping) in the table's
    order; a ValueError naming ``train.threats`` for a threat without a gradient attack."""
    budgets = threats.budgets() if hasattr(threats, "budgets") else dict(threats or {})
    unknown = sorted(set(budgets) - set(THREAT_ORDER))
    if unknown:
        raise ValueError(
            f"train.threats: {', '.join(unknown)} has no gradient attack to train against; "
            f"known: {', '.join(THREAT_ORDER)}"
        )
    return {name: budgets[name] for name in THREAT_ORDER if name in budgets}


def _pixels(budget: float, scale: float) -> int:
    return round(budget * scale)


def threat_attack(name: str, budget: Any, scale: float, steps: int, seed: int) -> Attack | None:
    """The training attack of threat ``name`` at ``scale`` of its budget (the eps ramp); None
    where the ramped budget is still nothing (0 pixels)."""
    if name in ("linf", "l2"):
        eps = budget * scale
        norm = "Linf" if name == "linf" else "L2"
        return PGD(eps=eps, norm=norm, steps=steps, step_size=LP_STEP * eps / steps, seed=seed)
    if name == "l0":
        pixels = _pixels(budget, scale)
        return SparsePGD(eps=pixels, steps=steps, restarts=1, seed=seed) if pixels else None
    if name == "patch":
        side = _pixels(budget, scale)
        # One window (the input gradient's heaviest): training affords one start, not a search.
        return PatchPGD(eps=side, steps=steps, locations=1, seed=seed) if side else None
    if name == "spatial":
        rotate, translate = budget["rotate"] * scale, budget["translate"] * scale
        return SpatialPGD(rotate=rotate, translate=translate, steps=steps, seed=seed)
    raise ValueError(f"train.threats: unknown threat {name!r}; known: {', '.join(THREAT_ORDER)}")


@dataclass(frozen=True)
class WorstOfThreats:
    """Per sample, the highest-loss example among its members' (cross-entropy, the loss training
    minimises; the earlier member on a tie). A member that is None leaves the clean image as its
    candidate. The attack call shape; the model's mode is left as it is."""

    members: tuple[Attack | None, ...]
    name: str = "worst_of_threats"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        best = images.detach().clone()
        best_loss = torch.full((len(images),), -torch.inf, device=images.device)
        for member in self.members:
            candidate = images.detach() if member is None else member(model, images, labels)
            with torch.no_grad():
                loss = F.cross_entropy(model(candidate), labels, reduction="none").float()
            higher = loss > best_loss
            best = torch.where(higher[:, None, None, None], candidate, best)
            best_loss = torch.where(higher, loss, best_loss)
        return best


@dataclass(frozen=True)
class MultiThreatRecipe(AdversarialLossRecipe):
    name = "multi_threat"

    steps: int
    threats: Any  # train.threats: the config section, or a mapping threat -> budget
    threat_mode: str

    def __post_init__(self) -> None:
        threat_budgets(self.threats)  # names a threat without a gradient attack
        if self.threat_mode not in ("mixed", "worst"):
            raise ValueError(f"train.threat_mode must be mixed or worst, got {self.threat_mode!r}")

    @classmethod
    def card_text(cls, train: Any) -> str:
        budgets = threat_budgets(train.threats)
        listed = (
            ", ".join(f"{name} ({_budget_words(name, budget)})" for name, budget in budgets.items())
            or "no threats (train.threats is empty)"
        )
        how = {"mixed": "one threat per batch in turn", "worst": "per sample the worst of them"}
        return (
            f"multi-threat adversarial training against {listed} ({how[train.threat_mode]}), "
            f"{train.steps} steps per attack, adversarial loss weight {train.adv_weight:g}"
        )

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        scale = eps / self.eps  # every budget keeps its ratio while eps ramps up
        budgets = threat_budgets(self.threats)
        if not budgets:  # the config refuses it first; a recipe built by hand is told here
            raise ValueError("train.threats is empty: multi_threat needs at least one threat")
        members = {
            name: threat_attack(name, budget, scale, self.steps, seed)
            for name, budget in budgets.items()
        }
        if self.threat_mode == "worst":
            return WorstOfThreats(tuple(members.values()))
        return list(members.values())[batch % len(members)]


def _budget_words(name: str, budget: Any) -> str:
    if name == "spatial":
        return f"rotations up to {budget['rotate']:g} deg, shifts up to {budget['translate']:g} px"
    if name == "l0":
        return f"{budget:g} pixels"
    if name == "patch":
        return f"{budget:g}x{budget:g} patch"
    return f"eps {budget:g}"
