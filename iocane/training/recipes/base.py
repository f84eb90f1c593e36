"""What every training recipe shares: the ``Recipe`` base class, a batch's figures, the passes a
step backpropagates through, and the ``pgd`` loss most recipes build on.

A recipe is a frozen dataclass whose fields are the ``train.*`` keys it reads, so building it
from the config (``from_config``) copies exactly those and cannot drift from them. It says how a
batch becomes a loss (``attack`` and ``loss``, or the whole ``step`` when it updates the weights
its own way, as ``free`` does), what it carries from batch to batch, and how the model card
describes it (``card_text``).

Batch norm: every attack runs with the model in eval mode, so crafting examples never moves the
running statistics and the attacker sees the function the evaluator sees; weight updates run in
train mode. ``free`` is the exception by construction: its perturbation step comes from the
training pass itself, in train mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from attacks import Attack

# A context for the forward passes of a training step (bf16 autocast, or nothing).
Autocast = Callable[[], contextlib.AbstractContextManager]


def other_norm(norm: str) -> str:
    return "L2" if norm == "Linf" else "Linf"


@dataclass
class BatchStats:
    """Sums over a batch, kept as device tensors so the loop never waits on the host."""

    clean_loss: torch.Tensor
    clean_correct: torch.Tensor
    adv_loss: torch.Tensor | None
    adv_correct: torch.Tensor | None
    objective: torch.Tensor | None = None  # the loss the step minimised (detached)


class TrainingPasses(nn.Module):
    """The forward passes a training step backpropagates through, made in one call: one
    logits tensor per batch, each batch a pass of its own (so each has its own batch-norm
    statistics). DDP allows one forward call per backward pass, and a mixed loss needs two
    passes; under DDP this module is what ``DistributedDataParallel`` wraps. Attacks call the
    model itself: their input-gradient passes must not take part in the gradient exchange."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(batch) for batch in batches)


def mixed_cross_entropy(
    clean_logits: torch.Tensor | None,
    adv_logits: torch.Tensor,
    labels: torch.Tensor,
    adv_weight: float,
) -> torch.Tensor:
    adv = F.cross_entropy(adv_logits, labels)
    if adv_weight == 1 or clean_logits is None:
        return adv
    return (1 - adv_weight) * F.cross_entropy(clean_logits, labels) + adv_weight * adv


def craft(
    model: nn.Module, attack: Attack, images: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The attack's examples, crafted in eval mode; the model goes back to train mode."""
    model.eval()
    adversarial = attack(model, images, labels)
    model.train()
    return adversarial


def batch_stats(
    clean_logits: torch.Tensor, adv_logits: torch.Tensor | None, labels: torch.Tensor
) -> BatchStats:
    n = len(labels)
    clean_logits = clean_logits.detach()
    stats = BatchStats(
        clean_loss=F.cross_entropy(clean_logits, labels) * n,
        clean_correct=(clean_logits.argmax(1) == labels).sum(),
        adv_loss=None,
        adv_correct=None,
    )
    if adv_logits is not None:
        adv_logits = adv_logits.detach()
        stats.adv_loss = F.cross_entropy(adv_logits, labels) * n
        stats.adv_correct = (adv_logits.argmax(1) == labels).sum()
    return stats


@torch.no_grad()
def reported_clean_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A clean pass that is only reported, in train mode like the adversarial pass it is
    reported beside (and like the clean pass of a mixed loss): in eval mode a batch-norm
    network early in training is judged by running statistics that lag its weights, which
    showed a resnet18 at 0.11 clean beside 0.59 adversarial. It must not change training:
    no gradient, the batch-norm buffers put back, the random state (dropout) restored."""
    buffers = [(buffer, buffer.clone()) for buffer in model.buffers()]
    device = images.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        logits = model(images)
    for buffer, saved in buffers:
        buffer.copy_(saved)
    return logits


def paired_logits(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    passes: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean and the adversarial logits of one batch, both from training passes: the losses
    that compare the two (TRADES' KL, ALP's pairing) train on both."""
    passes = passes if passes is not None else TrainingPasses(model)
    adversarial = craft(model, attack, images, labels)
    clean_logits, adv_logits = passes(images, adversarial)
    return clean_logits, adv_logits


def training_loss(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack | None,
    adv_weight: float,
    passes: nn.Module | None = None,
) -> tuple[torch.Tensor, BatchStats]:
    """The ``pgd`` loss: ``(1 - adv_weight) * CE(clean) + adv_weight * CE(adversarial)``;
    natural training without an attack. ``passes`` (default ``TrainingPasses(model)``) makes
    the passes the loss comes from."""
    passes = passes if passes is not None else TrainingPasses(model)
    if attack is None or adv_weight == 0:
        (clean_logits,) = passes(images)
        return F.cross_entropy(clean_logits, labels), batch_stats(clean_logits, None, labels)
    adversarial = craft(model, attack, images, labels)
    if adv_weight < 1:
        clean_logits, adv_logits = passes(images, adversarial)
    else:  # pure Madry: the clean pass is only reported: it neither trains nor moves BN stats
        clean_logits = reported_clean_logits(model, images)
        (adv_logits,) = passes(adversarial)
    loss = mixed_cross_entropy(clean_logits, adv_logits, labels, adv_weight)
    return loss, batch_stats(clean_logits, adv_logits, labels)


def backward_and_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, weight: float) -> None:
    """One weight update from ``loss``, its gradient scaled by ``weight`` (DDP shards)."""
    optimizer.zero_grad(set_to_none=True)
    (loss * weight).backward()
    optimizer.step()


@dataclass(frozen=True)
class Recipe:
    """A training method (``train.method``). Subclasses are frozen dataclasses whose fields are
    the ``train.*`` keys they read beyond the three every recipe reads (``norm``, ``eps`` and
    ``eps_ramp_epochs``, which the epoch loop ramps); ``name`` is their key in
    ``iocane.base.recipe_registry.RECIPES``."""

    name: ClassVar[str]
    # The recipe carries a perturbation from batch to batch (``free``); the train state holds
    # it (``TrainState.free_delta``) and the checkpoints keep it.
    carries_perturbation: ClassVar[bool] = False
    # The recipe trains for certificates (``ibp``, ``crown_ibp``): validation measures the
    # IBP-certified accuracy too, and selection keeps the epoch where it is best.
    certified: ClassVar[bool] = False

    norm: str
    eps: float
    eps_ramp_epochs: int

    @classmethod
    def config_fields(cls) -> tuple[str, ...]:
        """The ``train.*`` keys this recipe reads: its dataclass fields."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Recipe:
        """This recipe from a mapping holding (at least) its config fields."""
        missing = [name for name in cls.config_fields() if name not in values]
        if missing:
            raise TypeError(f"recipe {cls.name!r} needs {', '.join(missing)}")
        return cls(**{name: values[name] for name in cls.config_fields()})

    @classmethod
    def from_config(cls, train: Any) -> Recipe:
        """The recipe params.yaml's ``train`` section describes (``train.method`` picks the
        class from the registry; its fields are copied from the section)."""
        from iocane.training.recipes.registry import recipe_class  # it imports this module

        chosen = recipe_class(train.method)
        if not issubclass(chosen, cls):
            raise ValueError(f"train.method is {train.method!r}, not a {cls.__name__}")
        return chosen.from_values({name: getattr(train, name) for name in chosen.config_fields()})

    @property
    def method(self) -> str:
        return self.name

    @classmethod
    def card_text(cls, train: Any) -> str:
        """The recipe in words for the model card, with the ``train`` settings that matter."""
        raise NotImplementedError

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        """The attack crafting batch ``batch``'s examples at (ramped) ``eps``, its random start
        seeded with ``seed``."""
        raise NotImplementedError

    def loss(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        attack: Attack,
        passes: nn.Module | None = None,
    ) -> tuple[torch.Tensor, BatchStats]:
        """The loss of one batch and its figures; ``passes`` makes the passes it trains on."""
        raise NotImplementedError

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        eps: float,
        seed: int,
        batch: int,
        carried: torch.Tensor,
        autocast: Autocast,
        passes: nn.Module,
        weight: float,
    ) -> BatchStats:
        """One training step: the attack's examples, the loss, one weight update. ``carried``
        is the perturbation a recipe with ``carries_perturbation`` updates in place."""
        with autocast():  # the attack's passes too; the backward pass runs outside, as advised
            attack = self.attack(eps, seed, batch)
            loss, stats = self.loss(model, images, labels, attack, passes)
        backward_and_step(optimizer, loss, weight)
        stats.objective = loss.detach()
        return stats
