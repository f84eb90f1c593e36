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


class TwoConvCNN(nn.Module):
    """conv(f1)-pool-conv(f2)-pool-FC(hidden)-FC(classes), all ReLU, square kernels of
    ``kernel`` pixels: Madry et al.'s shape, shared with ``models.compact_cnn``. ``he_init``:
    He initialisation of the ReLU layers, else PyTorch's default (``compact_cnn``'s)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        filters: tuple[int, int],
        hidden: int,
        kernel: int,
        name: str,
        he_init: bool = True,
    ) -> None:
        super().__init__()
        if image_size < 4:
            raise ValueError(f"{name} needs image_size >= 4, got {image_size}")
        side = image_size // 2 // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, filters[0], kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(filters[0], filters[1], kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(filters[1] * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        # He init for the ReLU layers; there is no batch norm to rescue a bad scale.
        for m in [*self.features, self.classifier[1]] if he_init else []:
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MadryCNN(TwoConvCNN):
    """conv5x5(2w)-pool-conv5x5(4w)-pool-FC(64w)-FC(classes), all ReLU."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, width: int = DEFAULT_WIDTH
    ) -> None:
        if width < 1:
            raise ValueError(f"madry_cnn width must be >= 1, got {width}")
        filters = (2 * width, 4 * width)
        super().__init__(
            in_channels,
            num_classes,
            image_size,
            filters=filters,
            hidden=64 * width,
            kernel=5,
            name="madry_cnn",
        )


NETWORK = MadryCNN
