"""APGD: auto-PGD, the step-size-free PGD of Croce & Hein 2020 ("Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", the attacks
behind AutoAttack).

Threat model: Linf or L2 ball of radius eps around each image, intersected with [0,1].
Differences from plain PGD that make it strong without tuning:
- the step starts at 2 * eps and is halved at checkpoints (at 22%, 41%, 57%, ... of the
  iterations) when fewer than ``rho`` of the steps since the last checkpoint raised the loss, or
  when neither the step nor the best loss changed since then; a halving restarts from the best
  point found;
- a momentum term (0.75) smooths the iterates;
- losses: cross-entropy (``APGD``, AutoAttack's APGD-CE), the difference-of-logits ratio (DLR,
  invariant to the logits' scale, so it defeats saturated softmax), and the targeted DLR
  (``APGDTargeted``, APGD-T), run towards each of the ``n_target_classes`` runner-up classes.

Samples already misclassified are dropped from the computation (early stopping), and the first
fooling example found for a sample is kept.

Example::

    attack = APGD(eps=0.1, norm="Linf", steps=100)
    adversarial = attack(model, images, labels)  # (N, C, H, W) in [0, 1], within eps of images
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks.threat import ThreatModel, make_generator, threat_model

# (logits, labels, targets or None) -> per-sample loss to maximise
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def dlr_loss(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3): scale-invariant margin (needs 3+ classes)."""
    ordered, _ = logits.sort(dim=1)
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    is_top = ordered[:, -1] == true_logit
    best_other = torch.where(is_top, ordered[:, -2], ordered[:, -1])
    return -(true_logit - best_other) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


def targeted_dlr_loss(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
) -> torch.Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), towards class t (needs 4+ classes)."""
    assert targets is not None, "the targeted DLR loss needs target classes"
    ordered, _ = logits.sort(dim=1)
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    target_logit = logits.gather(1, targets[:, None]).squeeze(1)
    scale = ordered[:, -1] - (ordered[:, -3] + ordered[:, -4]) / 2 + 1e-12
    return -(true_logit - target_logit) / scale


def ce_loss(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None
) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def checkpoints(steps: int) -> list[int]:
    """Iterations at which the step size may be halved: p0 = 0, p1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    fractions = [0.0, 0.22]
    while fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06) <= 1:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    # Rounded first: 0.57 * 100 is 57.000000000000007 in floating point.
    return sorted({math.ceil(round(fraction * steps, 9)) for fraction in fractions[1:]} - {0})


def _loss_and_grad(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor | None,
    loss_fn: LossFn,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        inputs = images.detach().requires_grad_(True)
        logits = model(inputs)
        loss = loss_fn(logits, labels, targets)
        (grad,) = torch.autograd.grad(loss.sum(), inputs)
    # contiguous: a model whose output ignores its input gives expanded (stride-0) tensors,
    # which the in-place updates by index below must not write into.
    return loss.detach().contiguous(), grad.detach().contiguous(), logits.detach()


def _project(threat: ThreatModel, adversarial: torch.Tensor, images: torch.Tensor, eps: float):
    return (images + threat.project(adversarial - images, eps)).clamp(0.0, 1.0)


def apgd_run(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    loss_fn: LossFn,
    generator: torch.Generator,
    targets: torch.Tensor | None = None,
    rho: float = 0.75,
    momentum: float = 0.75,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run from a random start; returns (adversarial examples, fooled mask)."""
    threat = threat_model(norm)
    n = len(images)
    view = (-1,) + (1,) * (images.dim() - 1)
    start = threat.random_start(images.shape, eps, generator, images.device)
    current = (images + start).clamp(0.0, 1.0)
    loss, grad, logits = _loss_and_grad(model, current, labels, targets, loss_fn)
    fooled = logits.argmax(1) != labels
    result = current.clone()  # the fooling example once found, else the best-loss point
    best, best_loss, best_grad = current.clone(), loss.clone(), grad.clone()
    previous = current.clone()
    step = torch.full((n,), 2.0 * eps, device=images.device)
    increases = torch.zeros(n, device=images.device)
    best_loss_at_checkpoint = best_loss.clone()
    reduced_at_checkpoint = torch.ones(n, dtype=torch.bool, device=images.device)
    marks = set(checkpoints(steps))
    last_mark = 0
    for iteration in range(steps):
        active = (~fooled).nonzero().squeeze(1)
        if len(active) == 0:
            break
        x, x_prev, x_img = current[active], previous[active], images[active]
        with torch.no_grad():
            raw_step = threat.step(grad[active], 1.0) * step[active].view(view)
            z = _project(threat, x + raw_step, x_img, eps)
            weight = momentum if iteration > 0 else 1.0
            x_new = _project(threat, x + weight * (z - x) + (1 - weight) * (x - x_prev), x_img, eps)
        active_targets = targets[active] if targets is not None else None
        new_loss, new_grad, new_logits = _loss_and_grad(
            model, x_new, labels[active], active_targets, loss_fn
        )
        previous[active], current[active] = x, x_new
        increases[active] += (new_loss > loss[active]).float()
        loss[active], grad[active] = new_loss, new_grad
        newly_fooled = new_logits.argmax(1) != labels[active]
        fooled[active[newly_fooled]] = True
        result[active[newly_fooled]] = x_new[newly_fooled]
        improved = new_loss > best_loss[active]
        target = active[improved]
        best[target], best_loss[target], best_grad[target] = (
            x_new[improved],
            new_loss[improved],
            new_grad[improved],
        )
        if iteration + 1 in marks:
            height = iteration + 1 - last_mark
            oscillating = increases < rho * height
            stalled = ~reduced_at_checkpoint & (best_loss_at_checkpoint >= best_loss)
            reduce = (oscillating | stalled) & ~fooled
            step[reduce] /= 2.0
            # A halved step restarts from the best point found, without momentum.
            current[reduce] = best[reduce]
            previous[reduce] = best[reduce]
            grad[reduce] = best_grad[reduce]
            reduced_at_checkpoint = reduce
            best_loss_at_checkpoint = best_loss.clone()
            increases.zero_()
            last_mark = iteration + 1
    result[~fooled] = best[~fooled]
    return result.detach(), fooled


def _first_fooling(
    images: torch.Tensor,
    runs: int,
    run: Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Up to ``runs`` runs of an attack, each only on the samples no run has fooled yet.
    ``run(index, todo)`` returns (adversarial, fooled) for the samples ``todo``; the first run
    sets every result, a later one replaces a result only where it fools."""
    result = images.clone()
    fooled = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    for index in range(runs):
        todo = (~fooled).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        adversarial, is_fooled = run(index, todo)
        keep = torch.ones_like(is_fooled) if index == 0 else is_fooled
        result[todo[keep]] = adversarial[keep]
        fooled[todo[is_fooled]] = True
    return result


@dataclass(frozen=True)
class APGD:
    """APGD-CE (``loss="ce"``) or APGD-DLR (``loss="dlr"``), untargeted, with restarts."""

    eps: float
    norm: str = "Linf"
    steps: int = 100
    restarts: int = 1
    loss: str = "ce"
    seed: int = 0
    name: str = "apgd_ce"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        loss_fn = {"ce": ce_loss, "dlr": dlr_loss}.get(self.loss)
        if loss_fn is None:
            raise ValueError(f"unknown APGD loss {self.loss!r}; known: ce, dlr")
        generator = make_generator(self.seed, images.device)
        images = images.detach()

        def restart(_: int, todo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return apgd_run(
                model,
                images[todo],
                labels[todo],
                eps=self.eps,
                norm=self.norm,
                steps=self.steps,
                loss_fn=loss_fn,
                generator=generator,
            )

        return _first_fooling(images, self.restarts, restart)


@dataclass(frozen=True)
class APGDTargeted:
    """APGD-T: targeted DLR towards each of the ``n_target_classes`` runner-up classes."""

    eps: float
    norm: str = "Linf"
    steps: int = 100
    n_target_classes: int = 9
    seed: int = 0
    name: str = "apgd_t"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        generator = make_generator(self.seed, images.device)
        images = images.detach()
        with torch.no_grad():
            ranking = model(images).argsort(dim=1, descending=True)
        classes = ranking.shape[1]
        if classes < 4:
            raise ValueError(f"APGD-T needs at least 4 classes, the model has {classes}")

        def towards_runner_up(index: int, todo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # The (index + 1)-th most likely class that is not the true one.
            ordered = ranking[todo]
            others = ordered[ordered != labels[todo, None]].view(len(todo), classes - 1)
            return apgd_run(
                model,
                images[todo],
                labels[todo],
                eps=self.eps,
                norm=self.norm,
                steps=self.steps,
                loss_fn=targeted_dlr_loss,
                targets=others[:, index],
                generator=generator,
            )

        return _first_fooling(images, min(self.n_target_classes, classes - 1), towards_runner_up)
