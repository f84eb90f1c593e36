"""The MNIST network of Madry et al. 2018.

"Towards Deep Learning Models Resistant to Adversarial Attacks" (ICLR 2018,
arXiv:1706.06083), the model of their MNIST challenge: two 5x5 conv layers with
32 and 64 filters, each followed by 2x2 max pooling, a 1024-unit hidden layer,
and a linear classifier. The width multiplier ``w`` is the capacity scale of
their Figure 4: filters (2w, 4w) and 64w hidden units, so w=16 is the standard
(32, 64, 1024) network.
"""

import torch
from torch import nn

DEFAULT_WIDTH = 16


def flat_features(width: int, image_size: int) -> int:
    """Number of features entering the hidden FC layer (two floor-halving pools)."""
    side = image_size // 2 // 2
    return 4 * width * side * side


class MadryCNN(nn.Module):
    """conv5x5(2w)-pool-conv5x5(4w)-pool-FC(64w)-FC(classes), all ReLU."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, width: int = DEFAULT_WIDTH
    ) -> None:
        super().__init__()
        if image_size < 4:
            raise ValueError(f"madry_cnn needs image_size >= 4, got {image_size}")
        if width < 1:
            raise ValueError(f"madry_cnn width must be >= 1, got {width}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 2 * width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat_features(width, image_size), 64 * width),
            nn.ReLU(),
            nn.Linear(64 * width, num_classes),
        )
        # He init for the ReLU layers; there is no batch norm to rescue a bad scale.
        for m in [*self.features, self.classifier[1]]:
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
