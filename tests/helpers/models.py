"""Small models with known answers for the attack and training tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyLinear(nn.Module):
    """A linear classifier on 2x2 images: small enough for closed-form checks."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))
