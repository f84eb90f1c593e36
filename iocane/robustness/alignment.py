"""Perceptual alignment (Tsipras et al. 2019, "Robustness May Be at Odds with Accuracy"): what a
robust model's gradients look like, against the natural model's.

For a fixed set of test images, the figure shows, for the natural warmup model and the hardened
model side by side:

- the input gradient of the loss: for a natural model it looks like noise, for a robust one it
  tends to follow the object's strokes and edges;
- a large-eps targeted PGD image towards another class (the next one): the natural model is
  fooled by a change a person does not see, the robust one needs an image that starts to look
  like the target class.

The images are the first ``ALIGNMENT_IMAGES`` of the evaluation subset, so reruns and versions
show the same ones. The large eps is ``LARGE_EPS_FACTOR`` times the threat model's, in its norm.
This module computes them; ``iocane.reports.figures.plot_alignment`` draws the figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from attacks.threat import threat_model

ALIGNMENT_IMAGES = 6
LARGE_EPS_FACTOR = 4.0
TARGETED_STEPS = 100


def gradient_maps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The input gradient of the cross-entropy, per image, same shape as ``images``."""
    model.eval()
    with torch.enable_grad():
        inputs = images.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(inputs), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, inputs)
    return grad


def targeted_images(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, norm: str, eps: float
) -> torch.Tensor:
    """PGD towards ``targets``: descend the targets' cross-entropy within the eps ball."""
    threat = threat_model(norm)
    step_size = 2.5 * eps / TARGETED_STEPS
    delta = torch.zeros_like(images)
    model.eval()
    for _ in range(TARGETED_STEPS):
        with torch.enable_grad():
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(images + delta), targets, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = threat.project(delta - threat.step(grad, step_size), eps)
            delta = (images + delta).clamp(0, 1) - images
    return (images + delta).detach()


@dataclass
class Alignment:
    """What the perceptual-alignment figure shows: the images, their targets (the next class),
    and per model (natural first, as the figure reads) its input gradients, its targeted images,
    what it predicts for them and how often that is the target."""

    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    norm: str
    large_eps: float
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)
    moved: dict[str, torch.Tensor] = field(default_factory=dict)
    predicted: dict[str, torch.Tensor] = field(default_factory=dict)
    reached: dict[str, float] = field(default_factory=dict)


def perceptual_alignment(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    norm: str,
    eps: float,
) -> Alignment:
    """Gradients and ``LARGE_EPS_FACTOR`` x ``eps`` targeted images of each model on the first
    ``ALIGNMENT_IMAGES`` images, towards the next class."""
    images, labels = images[:ALIGNMENT_IMAGES], labels[:ALIGNMENT_IMAGES]
    targets = (labels + 1) % num_classes
    alignment = Alignment(images, labels, targets, norm, LARGE_EPS_FACTOR * eps)
    for name, model in models.items():
        moved = targeted_images(model, images, targets, norm, alignment.large_eps)
        with torch.no_grad():
            predicted = model(moved).argmax(1)
        alignment.reached[name] = (predicted == targets).float().mean().item()
        alignment.gradients[name] = gradient_maps(model, images, labels)
        alignment.moved[name] = moved
        alignment.predicted[name] = predicted
    return alignment
