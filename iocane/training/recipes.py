"""Adversarial training recipes (``train.method``): how one batch becomes a loss.

All recipes share the training loop (``iocane.training.loop.fit``, whose batch loop
``iocane.training.epoch`` calls ``train_step``) and the attack modules:

- ``pgd``: Madry et al. 2018. ``(1 - adv_weight) * CE(clean) + adv_weight * CE(PGD example)``.
- ``trades``: Zhang et al. 2019. ``CE(clean) + beta * KL(p(clean) || p(adversarial))``, the
  adversarial example maximising that KL term from a small Gaussian start.
- ``fgsm``: Goodfellow et al. 2015, the single-step baseline of Madry et al.'s capacity study:
  one signed-gradient step of eps from the clean image, then the ``pgd`` loss. Known to overfit
  to its own attack (label leaking, catastrophic overfitting); kept for comparison.
- ``fgsm_rs``: Wong et al. 2020, "Fast is better than free". One signed-gradient step of
  1.25 * eps from a uniform random start, then the ``pgd`` loss. Cheap, and prone to
  catastrophic overfitting, which ``fit`` watches for every epoch.
- ``nfgsm``: de Jorge et al. 2022, N-FGSM (``attacks.nfgsm``). One signed-gradient step of eps
  from uniform noise in [-2 eps, 2 eps], not projected back to the eps ball, then the ``pgd``
  loss. FGSM's cost; reported to avoid catastrophic overfitting (still watched for).
- ``free``: Shafahi et al. 2019. Each minibatch is replayed ``free_replays`` times; one backward
  pass gives the weight gradient and the perturbation's, which persists across replays and
  batches. An epoch costs ``free_replays`` passes per batch, so use about 1/m of the epochs.
- ``alp``: Kannan et al. 2018, adversarial logit pairing. The ``pgd`` loss plus
  ``alp_weight * mean ||z(clean) - z(adversarial)||^2`` over the logits z.
- ``multi``: alternates the threat models batch by batch: ``train.norm`` at ``train.eps`` on
  even batches, the other norm at ``multi_other_eps`` on odd ones (diversified training attacks).

Batch norm: every attack runs with the model in eval mode, so crafting examples never moves the
running statistics and the attacker sees the function the evaluator sees; weight updates run in
train mode. ``free`` is the exception by construction: its perturbation step comes from the
training pass itself, in train mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks import NFGSM, PGD, Attack
from attacks.threat import make_generator, threat_model
from iocane.base.config import TrainConfig

METHODS = ("pgd", "trades", "fgsm", "fgsm_rs", "nfgsm", "free", "alp", "multi")
# A context for the forward passes of a training step (bf16 autocast, or nothing).
Autocast = Callable[[], contextlib.AbstractContextManager]
FGSM_RS_STEP = 1.25  # Wong et al.: the step is 1.25 eps


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


def trades_objective(
    clean_logits: torch.Tensor, adv_logits: torch.Tensor, labels: torch.Tensor, beta: float
) -> torch.Tensor:
    """TRADES: natural cross-entropy plus beta times the batch-mean KL(p(clean) || p(adv))."""
    kl = F.kl_div(
        F.log_softmax(adv_logits, dim=1),
        F.log_softmax(clean_logits, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return F.cross_entropy(clean_logits, labels) + beta * kl


def alp_objective(
    clean_logits: torch.Tensor,
    adv_logits: torch.Tensor,
    labels: torch.Tensor,
    adv_weight: float,
    pairing: float,
) -> torch.Tensor:
    """ALP: the mixed cross-entropy plus ``pairing`` times the mean squared L2 distance between
    the clean and the adversarial logits."""
    distance = (clean_logits - adv_logits).pow(2).sum(dim=1).mean()
    return mixed_cross_entropy(clean_logits, adv_logits, labels, adv_weight) + pairing * distance


@dataclass(frozen=True)
class TradesAttack:
    """TRADES' inner maximisation: ascend KL(p(clean) || p(x')) within the eps ball."""

    eps: float
    norm: str = "Linf"
    steps: int = 10
    step_size: float = 0.01
    seed: int = 0
    name: str = "trades_kl"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        threat = threat_model(self.norm)
        generator = make_generator(self.seed, images.device)
        images = images.detach()
        with torch.no_grad():
            clean_log_probs = F.log_softmax(model(images), dim=1)
        start = 0.001 * torch.randn(images.shape, generator=generator, device=images.device)
        delta = (images + threat.project(start, self.eps)).clamp(0, 1) - images
        for _ in range(self.steps):
            with torch.enable_grad():
                delta.requires_grad_(True)
                adv_log_probs = F.log_softmax(model(images + delta), dim=1)
                kl = F.kl_div(adv_log_probs, clean_log_probs, reduction="sum", log_target=True)
                (grad,) = torch.autograd.grad(kl, delta)
            with torch.no_grad():
                delta = threat.project(delta + threat.step(grad, self.step_size), self.eps)
                delta = (images + delta).clamp(0, 1) - images
        return (images + delta).detach()


@dataclass(frozen=True)
class AdversarialRecipe:
    """How a stage crafts its training examples and its loss; None in ``fit`` means natural
    training. The defaults after ``eps_ramp_epochs`` make a plain Madry recipe."""

    norm: str
    eps: float
    step_size: float
    steps: int
    random_start: bool
    adv_weight: float
    eps_ramp_epochs: int
    method: str = "pgd"
    trades_beta: float = 6.0
    alp_weight: float = 0.5
    free_replays: int = 4
    multi_other_eps: float = 0.5

    @classmethod
    def from_config(cls, train: TrainConfig) -> AdversarialRecipe:
        """The recipe params.yaml's ``train`` section describes."""
        return cls(
            norm=train.norm,
            eps=train.eps,
            step_size=train.step_size,
            steps=train.steps,
            random_start=train.random_start,
            adv_weight=train.adv_weight,
            eps_ramp_epochs=train.eps_ramp_epochs,
            method=train.method,
            trades_beta=train.trades_beta,
            alp_weight=train.alp_weight,
            free_replays=train.free_replays,
            multi_other_eps=train.multi_other_eps,
        )

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        """The attack crafting batch ``batch``'s examples at (ramped) ``eps``; None for
        ``free``, whose perturbation comes from the training pass itself."""
        scale = eps / self.eps  # every radius and step keeps its ratio while eps ramps up
        if self.method == "free":
            return None
        if self.method == "fgsm":
            return PGD(eps=eps, norm=self.norm, steps=1, step_size=eps, random_start=False)
        if self.method == "fgsm_rs":
            return PGD(eps=eps, norm=self.norm, steps=1, step_size=FGSM_RS_STEP * eps, seed=seed)
        if self.method == "nfgsm":
            return NFGSM(eps=eps, norm=self.norm, seed=seed)
        if self.method == "trades":
            return TradesAttack(
                eps=eps,
                norm=self.norm,
                steps=self.steps,
                step_size=self.step_size * scale,
                seed=seed,
            )
        if self.method == "multi" and batch % 2 == 1:
            other = self.multi_other_eps * scale
            return PGD(
                eps=other,
                norm=other_norm(self.norm),
                steps=self.steps,
                step_size=2.5 * other / self.steps,
                random_start=self.random_start,
                seed=seed,
            )
        return PGD(
            eps=eps,
            norm=self.norm,
            steps=self.steps,
            step_size=self.step_size * scale,
            random_start=self.random_start,
            seed=seed,
        )


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


def _craft(model: nn.Module, attack: Attack, images: torch.Tensor, labels: torch.Tensor):
    model.eval()
    adversarial = attack(model, images, labels)
    model.train()
    return adversarial


def _stats(
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
def _reported_clean_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
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


def training_loss(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack | None,
    adv_weight: float,
    passes: nn.Module | None = None,
) -> tuple[torch.Tensor, BatchStats]:
    """The ``pgd`` loss: ``(1 - adv_weight) * CE(clean) + adv_weight * CE(adversarial)``.
    ``passes`` (default ``TrainingPasses(model)``) makes the passes the loss comes from."""
    passes = passes if passes is not None else TrainingPasses(model)
    if attack is None or adv_weight == 0:
        (clean_logits,) = passes(images)
        return F.cross_entropy(clean_logits, labels), _stats(clean_logits, None, labels)
    adversarial = _craft(model, attack, images, labels)
    if adv_weight < 1:
        clean_logits, adv_logits = passes(images, adversarial)
    else:  # pure Madry: the clean pass is only reported: it neither trains nor moves BN stats
        clean_logits = _reported_clean_logits(model, images)
        (adv_logits,) = passes(adversarial)
    loss = mixed_cross_entropy(clean_logits, adv_logits, labels, adv_weight)
    return loss, _stats(clean_logits, adv_logits, labels)


def recipe_loss(
    recipe: AdversarialRecipe,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    passes: nn.Module | None = None,
) -> tuple[torch.Tensor, BatchStats]:
    """The loss of one batch under ``recipe`` (every method but ``free``)."""
    passes = passes if passes is not None else TrainingPasses(model)
    if recipe.method in ("pgd", "fgsm", "fgsm_rs", "nfgsm", "multi"):
        return training_loss(model, images, labels, attack, recipe.adv_weight, passes)
    adversarial = _craft(model, attack, images, labels)
    clean_logits, adv_logits = passes(images, adversarial)
    if recipe.method == "trades":
        loss = trades_objective(clean_logits, adv_logits, labels, recipe.trades_beta)
    elif recipe.method == "alp":
        loss = alp_objective(clean_logits, adv_logits, labels, recipe.adv_weight, recipe.alp_weight)
    else:
        raise ValueError(f"unknown training method {recipe.method!r}; known: {METHODS}")
    return loss, _stats(clean_logits, adv_logits, labels)


def free_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    delta: torch.Tensor,
    eps: float,
    recipe: AdversarialRecipe,
    autocast: Autocast = contextlib.nullcontext,
    passes: nn.Module | None = None,
    weight: float = 1.0,
) -> tuple[torch.Tensor, BatchStats]:
    """``free_replays`` weight updates on one minibatch, each also stepping the persistent
    perturbation ``delta`` by eps along its gradient's sign (Linf) or direction (L2). Returns
    the new perturbation and the last replay's figures."""
    passes = passes if passes is not None else TrainingPasses(model)
    threat = threat_model(recipe.norm)
    delta = threat.project(delta, eps)
    delta = (images + delta).clamp(0, 1) - images
    for _ in range(recipe.free_replays):
        delta.requires_grad_(True)
        with autocast():
            (adv_logits,) = passes(images + delta)
            loss = F.cross_entropy(adv_logits, labels)
        optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        optimizer.step()
        with torch.no_grad():
            delta = threat.project(delta + threat.step(delta.grad, eps), eps)
            delta = (images + delta).clamp(0, 1) - images
    with autocast():
        clean_logits = _reported_clean_logits(model, images)
    stats = _stats(clean_logits, adv_logits, labels)
    stats.objective = loss.detach()  # a non-finite replay leaves the last one non-finite too
    return delta.detach(), stats


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    recipe: AdversarialRecipe | None,
    eps: float,
    seed: int,
    batch: int,
    free_delta: torch.Tensor,
    autocast: Autocast = contextlib.nullcontext,
    passes: nn.Module | None = None,
    weight: float = 1.0,
) -> BatchStats:
    """One training step on a batch: natural when ``recipe`` is None. The attack's random start
    is seeded with ``seed``; ``free`` updates its persistent perturbation ``free_delta`` in
    place. Nothing here waits on the host: the figures come back as device tensors. ``passes``
    (default ``TrainingPasses(model)``; the DDP-wrapped one under DDP) makes the loss passes;
    attacks use ``model``. ``weight`` scales the gradient: under DDP, which averages the
    ranks' gradients, a shard of n of a global batch of B images over W ranks weighs n * W / B,
    so that uneven shards add up to the gradient of the global batch's mean loss."""
    passes = passes if passes is not None else TrainingPasses(model)
    if recipe is not None and recipe.method == "free":
        n = len(labels)
        delta, stats = free_step(
            model,
            optimizer,
            images,
            labels,
            delta=free_delta[:n],
            eps=eps,
            recipe=recipe,
            autocast=autocast,
            passes=passes,
            weight=weight,
        )
        free_delta[:n] = delta
        return stats
    with autocast():  # the attack's passes too; the backward pass runs outside, as advised
        if recipe is None:
            loss, stats = training_loss(model, images, labels, None, 0.0, passes)
        else:
            attack = recipe.attack(eps, seed, batch)
            loss, stats = recipe_loss(recipe, model, images, labels, attack, passes)
    optimizer.zero_grad(set_to_none=True)
    (loss * weight).backward()
    optimizer.step()
    stats.objective = loss.detach()
    return stats
