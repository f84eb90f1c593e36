"""What hardening cost: passes through the model, wall time, and money.

``counting_passes`` counts, with hooks on the model, every forward pass (a call of the model) and
every backward pass (a gradient that reached the model's output: a weight update's, or an
attack's input gradient), and the images in each. The counting happens on the host, as the
passes are issued, so it adds no device synchronisation. ``fit`` and the evaluate stage record
their counts and wall time in their metrics; ``cost_summary`` turns the three stages' figures into
hours, the overhead of adversarial over natural training, an estimated price, and the robust
accuracy gained per hour.

A run resumed after an interruption counts what it did after the resume (its metrics say where
it resumed); a compiled model (``runtime.compile``) is not counted, because its passes bypass the
module's hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from iocane.files import read_json
from iocane.layout import Layout


@dataclass
class Tally:
    forward: int = 0  # calls of the model
    backward: int = 0  # gradients that reached its output
    forward_images: int = 0
    backward_images: int = 0


class PassCount:
    """Passes by section (``training``, ``validation``, ...): the one open when they ran."""

    def __init__(self, section: str) -> None:
        self.current = section
        self.tallies: dict[str, Tally] = {}

    def tally(self) -> Tally:
        return self.tallies.setdefault(self.current, Tally())

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        previous, self.current = self.current, name
        try:
            yield
        finally:
            self.current = previous

    def totals(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """``forward_passes``, ``backward_passes``, ``forward_images``, ``backward_images``
        over all sections, and the same per section (``training_backward_passes``...), as
        tensors (to be added up over DDP ranks)."""
        figures: dict[str, int] = {}
        for section, tally in sorted(self.tallies.items()):
            for key, value in asdict(tally).items():
                name = key if key.endswith("images") else f"{key}_passes"
                figures[name] = figures.get(name, 0) + value
                figures[f"{section}_{name}"] = value
        return {key: torch.tensor(value, device=device) for key, value in figures.items()}


@contextmanager
def counting_passes(model: nn.Module, section: str = "all") -> Iterator[PassCount]:
    """Count the forward and backward passes of ``model`` within the block."""
    count = PassCount(section)

    def on_forward(module: nn.Module, args: tuple, output: object) -> None:
        images = len(args[0]) if args and isinstance(args[0], torch.Tensor) else 0
        tally = count.tally()
        tally.forward += 1
        tally.forward_images += images
        if isinstance(output, torch.Tensor) and output.requires_grad:

            def on_backward(grad: torch.Tensor) -> None:
                tally.backward += 1
                tally.backward_images += images

            output.register_hook(on_backward)

    handle = model.register_forward_hook(on_forward)
    try:
        yield count
    finally:
        handle.remove()


def _per_image(metrics: dict, key: str) -> float | None:
    images = metrics.get("images_trained")
    value = metrics.get(key)
    return value / images if images and value is not None else None


def cost_summary(
    layout: Layout, price_per_hour: float | None, evaluation: dict | None = None
) -> dict[str, float | None]:
    """Hours per stage and in all, adversarial-training overhead against natural training (in
    time and in passes, per training image), the estimated price, and, given the evaluation,
    the robust accuracy gained over the natural model per hour spent."""
    stages = {stage: read_json(layout.metrics_file(stage)) for stage in ("warmup", "train")}
    evaluate = read_json(layout.metrics_file("evaluate"))
    seconds = {stage: float(metrics.get("seconds", 0.0)) for stage, metrics in stages.items()}
    seconds["evaluate"] = float(evaluate.get("seconds", 0.0))
    hours = sum(seconds.values()) / 3600
    warmup, train = stages["warmup"], stages["train"]
    summary: dict[str, float | None] = {
        **{f"{stage}_hours": value / 3600 for stage, value in seconds.items()},
        "hours": hours,
        "overhead_time_ratio": _ratio(_per_image(train, "seconds"), _per_image(warmup, "seconds")),
        "overhead_pass_ratio": _ratio(_passes_per_image(train), _passes_per_image(warmup)),
        "price": hours * price_per_hour if price_per_hour is not None else None,
    }
    for stage, metrics in (*stages.items(), ("evaluate", evaluate)):
        for kind in ("forward_passes", "backward_passes"):
            summary[f"{stage}_{kind}"] = metrics.get(kind)
    if evaluation is not None:
        gain = evaluation["robust_accuracy"] - evaluation["natural"]["robust_accuracy"]
        summary["robust_gain"] = gain
        summary["robust_gain_per_hour"] = gain / hours if hours > 0 else None
    return summary


def _passes_per_image(metrics: dict) -> float | None:
    images = metrics.get("images_trained")
    forward, backward = metrics.get("forward_images"), metrics.get("backward_images")
    if not images or forward is None or backward is None:
        return None
    return (forward + backward) / images


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
