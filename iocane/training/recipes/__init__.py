"""Adversarial training recipes (``train.method``): how one batch becomes a loss.

Each method is one class in a module of its own (``pgd``, ``trades``, ``fgsm``, ``fgsm_rs``,
``nfgsm``, ``free``, ``alp``, ``multi``, ``multi_threat``), a ``Recipe`` (``base``): its attack,
its loss, the state it carries between batches and its text for the model card. The table of
methods is ``iocane.base.recipe_registry.RECIPES``; ``recipe_class`` imports the class an entry
names. The certified recipes (``ibp``, ``crown_ibp``) have no attack: their adversary is a
bound of ``iocane.certify``.

All recipes share the training loop (``iocane.training.loop.fit``, whose batch loop
``iocane.training.epoch`` calls ``train_step``) and the attack modules (``attacks``).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from iocane.base.recipe_registry import METHOD_NAMES
from iocane.training.recipes.base import (
    Autocast,
    BatchStats,
    Recipe,
    TrainingPasses,
    backward_and_step,
    mixed_cross_entropy,
    training_loss,
)
from iocane.training.recipes.registry import make_recipe, recipe_class

METHODS = METHOD_NAMES

__all__ = [
    "METHODS",
    "Autocast",
    "BatchStats",
    "Recipe",
    "TrainingPasses",
    "make_recipe",
    "mixed_cross_entropy",
    "recipe_class",
    "train_step",
    "training_loss",
]


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    recipe: Recipe | None,
    eps: float,
    seed: int,
    batch: int,
    free_delta: torch.Tensor,
    autocast: Autocast = contextlib.nullcontext,
    passes: nn.Module | None = None,
    weight: float = 1.0,
) -> BatchStats:
    """One training step on a batch: natural when ``recipe`` is None, else the recipe's step.
    The attack's random start is seeded with ``seed``; a recipe that carries a perturbation
    (``free``) updates ``free_delta`` in place. Nothing here waits on the host: the figures come
    back as device tensors. ``passes`` (default ``TrainingPasses(model)``; the DDP-wrapped one
    under DDP) makes the loss passes; attacks use ``model``. ``weight`` scales the gradient:
    under DDP, which averages the ranks' gradients, a shard of n of a global batch of B images
    over W ranks weighs n * W / B, so that uneven shards add up to the gradient of the global
    batch's mean loss."""
    passes = passes if passes is not None else TrainingPasses(model)
    if recipe is not None:
        return recipe.step(
            model,
            optimizer,
            images,
            labels,
            eps=eps,
            seed=seed,
            batch=batch,
            carried=free_delta,
            autocast=autocast,
            passes=passes,
            weight=weight,
        )
    with autocast():
        loss, stats = training_loss(model, images, labels, None, 0.0, passes)
    backward_and_step(optimizer, loss, weight)
    stats.objective = loss.detach()
    return stats
