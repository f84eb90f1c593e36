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
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from attacks.threat import threat_model
from iocane.files import write_atomic
from iocane.robustness.curves import show_image

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


def _visible(gradient: torch.Tensor) -> torch.Tensor:
    """A gradient as a picture: per image, scaled to [0, 1] around grey (0.5 = zero)."""
    scale = gradient.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return 0.5 + 0.5 * gradient / scale


def plot_alignment(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    norm: str,
    eps: float,
    path: Path,
) -> dict[str, float]:
    """Write the figure (rows: images; columns: the image, then per model its gradient and its
    targeted image) and return, per model, how often the targeted image reached its target."""
    images, labels = images[:ALIGNMENT_IMAGES], labels[:ALIGNMENT_IMAGES]
    targets = (labels + 1) % len(class_names)
    large_eps = LARGE_EPS_FACTOR * eps
    columns = [("image", images, None)]
    reached: dict[str, float] = {}
    for name, model in models.items():
        moved = targeted_images(model, images, targets, norm, large_eps)
        with torch.no_grad():
            predicted = model(moved).argmax(1)
        reached[name] = (predicted == targets).float().mean().item()
        columns.append((f"{name}: gradient", _visible(gradient_maps(model, images, labels)), None))
        columns.append((f"{name}: towards target", moved, predicted))
    figure = Figure(figsize=(1.7 * len(columns), 1.7 * len(images) + 0.8))
    axes = figure.subplots(len(images), len(columns), squeeze=False)
    for column, (title, batch, predictions) in enumerate(columns):
        for row in range(len(images)):
            axis = axes[row][column]
            show_image(axis, batch[row])
            axis.set_xticks([])
            axis.set_yticks([])
            if predictions is not None:
                hit = predictions[row] == targets[row]
                axis.set_xlabel(
                    f"-> {class_names[predictions[row]]}", fontsize=7, color="red" if hit else "k"
                )
            elif column == 0:
                axis.set_xlabel(
                    f"{class_names[labels[row]]}, target {class_names[targets[row]]}", fontsize=7
                )
        axes[0][column].set_title(title, fontsize=8)
    figure.suptitle(
        f"Input gradients, and targeted PGD at {norm} eps {large_eps:g} ({LARGE_EPS_FACTOR:g}x "
        "the threat model; red: target reached). Tsipras et al. 2019: a robust model's tend to "
        "follow the object and to look like the target class",
        fontsize=8,
    )
    figure.tight_layout()
    write_atomic(path, lambda stream: figure.savefig(stream, dpi=110, format="png"))
    return reached
