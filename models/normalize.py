"""Per-channel input normalisation as a module.

Keeping normalisation inside the model means every attack and every evaluation
works on raw images in [0, 1], where the epsilon-ball and the clipping to the
valid pixel range are defined (Madry et al. 2018, "Towards Deep Learning Models
Resistant to Adversarial Attacks", arXiv:1706.06083).
"""

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Map images ``x`` in [0, 1] to ``(x - mean) / std`` channel-wise."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if len(mean) == 0:
            raise ValueError("mean/std must have at least one channel")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        # Buffers, not plain attributes: they are saved in the state_dict (so a
        # checkpoint is self-describing) and follow the model across .to(device).
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
