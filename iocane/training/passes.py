"""Counting the passes through a model: every forward pass (a call of the model) and every
backward pass (a gradient that reached the model's output: a weight update's, or an attack's input
gradient), and the images in each.

The counting happens on the host with module hooks, as the passes are issued, so it adds no
device synchronisation. ``fit`` and the evaluate stage record their counts and wall time in their
metrics; ``iocane.reports.costs`` turns them into hours and prices. A compiled model
(``runtime.compile``) is not counted: its passes bypass the module's hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn


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
