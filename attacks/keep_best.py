"""What an attack keeps per sample while it searches: the rule every attack follows, written once.

Per sample, the first example that fools the model stands; until one does, the best one so far
(the highest loss, or the highest margin for the margin-driven searches). Samples already fooled
are not attacked further.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# One search on the samples ``todo`` (indices into the batch): their examples and margins.
Search = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def best_over_restarts(
    images: torch.Tensor, margin: torch.Tensor, restarts: int, search: Search
) -> torch.Tensor:
    """``restarts`` searches, each on the samples whose margin (best other logit minus the true
    one) is not yet positive; a search's example replaces a sample's only where its margin is
    higher. ``margin`` is where the samples start (their clean margin, or -inf to take the first
    search's result whatever it is); the clean images stand where nothing beat it."""
    best = images.clone()
    best_margin = margin.clone()
    for _ in range(restarts):
        todo = (best_margin <= 0).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        found, found_margin = search(todo)
        better = found_margin > best_margin[todo]
        best[todo[better]] = found[better]
        best_margin[todo[better]] = found_margin[better]
    return best


@dataclass
class BestExamples:
    """Per sample: the example kept, its loss, and whether it fooled the model."""

    examples: torch.Tensor
    loss: torch.Tensor
    fooled: torch.Tensor

    @classmethod
    def start(cls, images: torch.Tensor) -> BestExamples:
        """The clean images, kept until any candidate is recorded (its loss beats -inf)."""
        n = images.shape[0]
        return cls(
            examples=images.clone(),
            loss=torch.full((n,), -torch.inf, device=images.device),
            fooled=torch.zeros(n, dtype=torch.bool, device=images.device),
        )

    def open_samples(self) -> torch.Tensor:
        """The indices of the samples not fooled yet."""
        return (~self.fooled).nonzero().squeeze(1)

    def record(
        self,
        samples: torch.Tensor,
        candidates: torch.Tensor,
        loss: torch.Tensor,
        wrong: torch.Tensor,
    ) -> None:
        """Candidates for the open ``samples``: each replaces the kept example where it fools
        the model or its loss is higher."""
        better = wrong | (loss > self.loss[samples])
        update = samples[better]
        self.examples[update] = candidates[better]
        self.loss[update] = loss[better]
        self.fooled[samples] = wrong
