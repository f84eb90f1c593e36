"""``crown_ibp``: CROWN-IBP training, Zhang et al. 2020, "Towards Stable and Efficient Training
of Verifiably Robust Neural Networks".

The ``ibp`` loss with a tighter bound early in the ramp: the margin bounds are
``beta * CROWN-IBP + (1 - beta) * IBP``, where CROWN-IBP is a backward linear (CROWN) bound of
the margins over intermediate bounds from IBP (``iocane.certify``, method ``"crown_ibp"``).
``beta`` ramps from ``train.beta_start`` (the paper: 1) to ``train.beta_end`` (0) over the eps
ramp, as ``kappa`` does: the linear bound steadies the start of training, when IBP's boxes are
loose, and the end trains on the IBP bound that scales. At ``beta`` 0 the CROWN pass is skipped
(on CPU a step with it cost about ten ``ibp`` steps: ``ibp_cnn`` on Fashion-MNIST, batches of
128), so after the ramp a step costs what an ``ibp`` step costs. The time budget's calibration
times a step at the full eps, where beta is already 0: it under-plans the ramp's epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from iocane.certify import margin_lower_bounds
from iocane.training.recipes.ibp import IbpRecipe, ramp_progress, scheduled


@dataclass(frozen=True)
class CrownIbpRecipe(IbpRecipe):
    name = "crown_ibp"

    beta_start: float
    beta_end: float

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            "CROWN-IBP certified training (Zhang et al. 2020): kappa * CE(clean) + (1 - kappa) "
            "* CE(worst-case logits of beta * CROWN-IBP + (1 - beta) * IBP bounds), kappa from "
            f"{train.kappa_start:g} to {train.kappa_end:g} and beta from {train.beta_start:g} "
            f"to {train.beta_end:g} over the eps ramp of {train.eps_ramp_epochs} epochs"
        )

    def beta(self, eps: float) -> float:
        """The weight of the CROWN-IBP bound at (ramped) ``eps``."""
        return scheduled(self.beta_start, self.beta_end, ramp_progress(eps, self.eps))

    def margin_bounds(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float
    ) -> torch.Tensor:
        beta = self.beta(eps)
        bounds = {
            method: margin_lower_bounds(
                model, images, labels, norm=self.norm, eps=eps, method=method
            )
            for method, share in (("crown_ibp", beta), ("ibp", 1 - beta))
            if share > 0
        }
        if len(bounds) == 1:
            return next(iter(bounds.values()))
        return beta * bounds["crown_ibp"] + (1 - beta) * bounds["ibp"]
