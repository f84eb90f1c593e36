"""The figures of an evaluation, drawn with matplotlib: the accuracy-vs-eps curves, the grid of
clean and attacked examples, the perceptual-alignment figure and the threat profile.

``iocane.robustness`` computes what they show; this module only draws it. Figures use
``matplotlib.figure.Figure``, not pyplot: no global backend, so drawing works headless and in
threads. Each file is written atomically (``iocane.base.files.write_atomic``): a reader never sees a
half-written PNG.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from matplotlib.figure import Figure

from iocane.base.files import write_atomic
from iocane.reports.threats import Bar
from iocane.robustness.alignment import LARGE_EPS_FACTOR, Alignment
from iocane.robustness.evaluation import Examples

DPI = 110
_CHARACTERS_PER_INCH = 14  # a title line at font size 8 that fits the figure with a margin


def _save(figure: Figure, path: Path) -> None:
    write_atomic(path, lambda stream: figure.savefig(stream, dpi=DPI, format="png"))


def plot_curves(
    curves: dict[str, dict[str, list[float]]],
    eps: dict[str, float],
    path: Path,
    labels: dict[str, str] | None = None,
) -> None:
    """Accuracy against eps, one panel per norm, natural beside hardened (the models the curves
    hold; ``labels`` renames them in the legend); ``eps[norm]`` marks the evaluation eps."""
    labels = labels or {}
    figure = Figure(figsize=(5 * len(curves), 3.8))
    axes = figure.subplots(1, len(curves), squeeze=False)
    for axis, (norm, curve) in zip(axes[0], curves.items(), strict=True):
        for label, style in (("natural", "o--"), ("hardened", "o-")):
            if label in curve:
                axis.plot(
                    curve["eps"], curve[label], style, label=f"{labels.get(label, label)} model"
                )
        axis.axvline(eps[norm], color="grey", linestyle=":", label="evaluation eps")
        axis.set_xlabel(f"{norm} eps")
        axis.set_ylabel("accuracy under APGD-CE")
        axis.set_ylim(-0.02, 1.02)
        axis.set_title(f"Accuracy vs {norm} perturbation size")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    _save(figure, path)


def plot_threat_profile(bars: list[Bar], path: Path, labels: dict[str, str] | None = None) -> None:
    """One bar group per threat (``iocane.reports.threats.threat_bars``): the natural model's
    accuracy beside the hardened one's, each bar labelled with its figure, so that what
    adversarial training bought, and what it cost, reads at a glance."""
    labels = labels or {}
    figure = Figure(figsize=(max(5.0, 1.25 * len(bars) + 1.5), 3.8))
    axis = figure.subplots()
    positions = range(len(bars))
    width = 0.38
    series = (("natural", -width / 2, "#bbbbbb"), ("hardened", width / 2, "#1f77b4"))
    for model, offset, colour in series:
        values = [getattr(bar, model) for bar in bars]
        if all(value is None for value in values):
            continue  # no natural model (iocane evaluate on a model alone)
        shown = [float("nan") if value is None else value for value in values]
        drawn = axis.bar(
            [p + offset for p in positions],
            shown,
            width,
            color=colour,
            label=f"{labels.get(model, model)} model",
        )
        axis.bar_label(drawn, fmt="%.2f", fontsize=7, padding=1)
    # Budget texts run long ("rotations up to 30 deg, shifts up to 3 px"): wrapped to a bar
    # group's width, so that neighbouring labels never overlap.
    wrapped = [
        "\n".join(part for line in bar.label.split("\n") for part in textwrap.wrap(line, 16))
        for bar in bars
    ]
    axis.set_xticks(list(positions), wrapped, fontsize=7)
    axis.set_ylabel("accuracy")
    axis.set_ylim(0, 1.1)
    axis.set_title("What the model withstands: accuracy per threat at its budget")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    _save(figure, path)


def show_image(axis, picture: torch.Tensor) -> None:
    """A (C, H, W) image in [0, 1] on a matplotlib axis: grey for one channel, else RGB."""
    picture = picture.detach().cpu()
    if picture.shape[0] == 1:
        axis.imshow(picture[0], cmap="gray", vmin=0, vmax=1)
    else:
        axis.imshow(picture.permute(1, 2, 0).clamp(0, 1))


def plot_examples(examples: Examples, class_names: list[str], path: Path) -> None:
    """Clean images over their adversarial versions, each titled with the model's prediction
    (green when right, red when wrong)."""
    count = len(examples.images)
    figure = Figure(figsize=(1.6 * count, 3.6))
    axes = figure.subplots(2, count, squeeze=False)
    rows = (
        (examples.images, examples.clean_predictions),
        (examples.adversarial, examples.adversarial_predictions),
    )
    for column in range(count):
        for row, (batch, predictions) in enumerate(rows):
            axis = axes[row][column]
            show_image(axis, batch[column])
            correct = predictions[column] == examples.labels[column]
            axis.set_title(
                class_names[predictions[column]], fontsize=8, color="green" if correct else "red"
            )
            axis.axis("off")
    axes[0][0].text(-0.5, 0.5, "clean", transform=axes[0][0].transAxes, ha="right", fontsize=9)
    axes[1][0].text(-0.5, 0.5, "attacked", transform=axes[1][0].transAxes, ha="right", fontsize=9)
    figure.tight_layout()
    _save(figure, path)


def _visible(gradient: torch.Tensor) -> torch.Tensor:
    """A gradient as a picture: per image, scaled to [0, 1] around grey (0.5 = zero)."""
    scale = gradient.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return 0.5 + 0.5 * gradient / scale


def plot_alignment(
    alignment: Alignment,
    class_names: list[str],
    path: Path,
    model_names: dict[str, str] | None = None,
) -> None:
    """Write the perceptual-alignment figure (``alignment_figure``) to ``path``."""
    _save(alignment_figure(alignment, class_names, model_names), path)


def alignment_figure(
    alignment: Alignment, class_names: list[str], model_names: dict[str, str] | None = None
) -> Figure:
    """The perceptual-alignment figure. Rows: images; columns: the image, then per model its
    input gradient and its targeted image (red label: target reached); ``model_names`` renames
    the models in the headings."""
    model_names = model_names or {}
    images, labels, targets = alignment.images, alignment.labels, alignment.targets
    columns = [("image", images, None)]
    for name in alignment.moved:
        heading = model_names.get(name, name)
        columns.append((f"{heading}: gradient", _visible(alignment.gradients[name]), None))
        columns.append(
            (f"{heading}: towards target", alignment.moved[name], alignment.predicted[name])
        )
    width = 1.7 * len(columns)
    title = (
        f"Input gradients, and targeted PGD at {alignment.norm} eps {alignment.large_eps:g} "
        f"({LARGE_EPS_FACTOR:g}x the threat model; red: target reached). Tsipras et al. 2019: a "
        "robust model's tend to follow the object and to look like the target class"
    )
    # Wrapped to the figure's width: one long line ran past both edges.
    lines = textwrap.wrap(title, width=int(width * _CHARACTERS_PER_INCH))
    figure = Figure(figsize=(width, 1.7 * len(images) + 0.8 + 0.15 * (len(lines) - 1)))
    axes = figure.subplots(len(images), len(columns), squeeze=False)
    for column, (heading, batch, predictions) in enumerate(columns):
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
        axes[0][column].set_title(heading, fontsize=8)
    figure.suptitle("\n".join(lines), fontsize=8)
    figure.tight_layout()
    return figure
