"""``gaussian``: Cohen et al. 2019's base-classifier training for randomized smoothing.

Cross-entropy on the images plus Gaussian noise ``N(0, train.noise_sigma^2)`` (no clipping, as
Cohen et al.): a classifier that is accurate under the noise it will be smoothed with, so that
``iocane.certify.smoothing`` certifies large L2 radii. Each batch's noise comes from a generator
seeded with the batch's seed (``iocane.training.seeds.batch_seed``), never the global stream, so
a resumed run draws the noise it would have drawn. The noise level is fixed from the first batch
(Cohen et al. do not ramp it): ``train.eps`` and its ramp play no part in the loss, although the
loop's validation still attacks at ``train.eps``. The clean pass is only reported, like pure
Madry's: it neither trains nor moves the batch-norm statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attacks import Attack
from attacks.threat import make_generator
from iocane.training.recipes.base import BatchStats, Recipe, training_loss


@dataclass(frozen=True)
class GaussianNoise:
    """``images + N(0, sigma^2)`` from a generator seeded with ``seed`` on the images' device,
    in the attack's call shape (the model and labels play no part). Not clipped to [0, 1]:
    smoothing adds the same unclipped noise."""

    sigma: float
    seed: int
    name: str = "gaussian_noise"
    norm: str = "L2"

    @property
    def eps(self) -> float:
        return self.sigma  # the noise level stands where an attack's budget stands

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        generator = make_generator(self.seed, images.device)
        noise = torch.randn(
            images.shape, generator=generator, device=images.device, dtype=images.dtype
        )
        return images.detach() + self.sigma * noise


@dataclass(frozen=True)
class GaussianRecipe(Recipe):
    name = "gaussian"

    noise_sigma: float

    def __post_init__(self) -> None:
        if not self.noise_sigma > 0:
            raise ValueError(f"train.noise_sigma must be > 0, got {self.noise_sigma!r}")

    @classmethod
    def card_text(cls, train: Any) -> str:
        return (
            "Gaussian noise augmentation (Cohen et al. 2019), the base classifier of randomized "
            f"smoothing: cross-entropy on images plus noise of sigma {train.noise_sigma:g}"
        )

    def attack(self, eps: float, seed: int, batch: int = 0) -> Attack | None:
        return GaussianNoise(sigma=self.noise_sigma, seed=seed)

    def loss(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        attack: Attack,
        passes: nn.Module | None = None,
    ) -> tuple[torch.Tensor, BatchStats]:
        # Weight 1: the noisy pass alone trains; the noisy figures are the "adversarial" ones.
        return training_loss(model, images, labels, attack, 1.0, passes)
