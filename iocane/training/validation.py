"""Validation during training: each epoch's clean (and adversarial) figures on the validation
split, sharded over the ranks under DDP, and the attack that measures them; for the certified
recipes, the share of the split the IBP bound certifies.

These are the per-epoch figures the history and the weight selection read; the robustness the
gate trusts is the evaluate stage's (``iocane.robustness``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from attacks import PGD, Attack
from iocane.base.config import Config
from iocane.certify import certified_mask, margin_lower_bounds
from iocane.data.prepared import Split
from iocane.training.ranks import Ranks
from iocane.training.recipes import Recipe


@torch.no_grad()
def _logits(model: nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([model(batch) for batch in batches])


def evaluate_split(
    model: nn.Module, split: Split, attack: Attack | None, batch_size: int
) -> dict[str, float]:
    """Clean (and, with an attack, adversarial) loss and accuracy of a model on a split, the
    images converted to float a batch at a time."""
    model.eval()
    parts = [slice(i, i + batch_size) for i in range(0, len(split), batch_size)]
    logits = _logits(model, (split.batch(part) for part in parts))
    figures = {
        "clean_loss": F.cross_entropy(logits, split.labels).item(),
        "clean_accuracy": (logits.argmax(1) == split.labels).float().mean().item(),
    }
    if attack is not None:
        # A list, not a generator: the attack needs gradients, and _logits runs without them.
        adversarial = [attack(model, split.batch(part), split.labels[part]) for part in parts]
        adv_logits = _logits(model, adversarial)
        figures["adv_loss"] = F.cross_entropy(adv_logits, split.labels).item()
        figures["adv_accuracy"] = (adv_logits.argmax(1) == split.labels).float().mean().item()
    return figures


def evaluate_shards(
    model: nn.Module, split: Split, attack: Attack | None, batch_size: int, ranks: Ranks
) -> dict[str, float]:
    """``evaluate_split`` with each rank taking its share of the split, the figures added up
    over the ranks: the same means, in 1/N of the time."""
    if not ranks.distributed:
        return evaluate_split(model, split, attack, batch_size)
    part = ranks.shard(torch.arange(len(split), device=split.labels.device))
    keys = ("clean_loss", "clean_accuracy") + (("adv_loss", "adv_accuracy") if attack else ())
    device = split.labels.device
    if len(part):
        figures = evaluate_split(model, split.subset(part), attack, batch_size)
        sums = {key: torch.tensor(figures[key] * len(part), device=device) for key in keys}
    else:
        sums = {key: torch.zeros((), device=device) for key in keys}
    return {key: value.item() / len(split) for key, value in ranks.sum(sums).items()}


@torch.no_grad()
def certified_shards(
    model: nn.Module, split: Split, *, norm: str, eps: float, batch_size: int, ranks: Ranks
) -> float:
    """The share of the split the IBP bound certifies at ``eps`` (the certified recipes'
    per-epoch figure, which selection reads), each rank bounding its share of the split."""
    model.eval()
    device = split.labels.device
    part = ranks.shard(torch.arange(len(split), device=device))
    certified = torch.zeros((), device=device)
    for start in range(0, len(part), batch_size):
        index = part[start : start + batch_size]
        labels = split.labels[index]
        margins = margin_lower_bounds(
            model, split.batch(index), labels, norm=norm, eps=eps, method="ibp"
        )
        certified += certified_mask(margins, labels).sum()
    certified = ranks.sum({"certified": certified})["certified"]
    return certified.item() / max(len(split), 1)


def certified_figures(
    model: nn.Module, split: Split, recipe: Recipe | None, batch_size: int, ranks: Ranks
) -> dict[str, float]:
    """A certified recipe's validation figure: the share of the split the IBP bound certifies
    at the full ``train.eps`` (``certified_accuracy``); nothing for the other recipes."""
    if recipe is None or not recipe.certified:
        return {}
    share = certified_shards(
        model, split, norm=recipe.norm, eps=recipe.eps, batch_size=batch_size, ranks=ranks
    )
    return {"certified_accuracy": share}


def validation_attack(config: Config) -> PGD:
    """Per-epoch validation: the training attack at full eps, one fixed-seed restart."""
    train = config.train
    return PGD(eps=train.eps, norm=train.norm, steps=train.steps, step_size=train.step_size, seed=1)
