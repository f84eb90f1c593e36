"""A compact 3x3 CNN for 28x28 grey images, the plain-loop reference of issue 19.

Two 3x3 conv layers with 32 and 64 filters, each followed by 2x2 max pooling, a 256-unit
hidden layer and a linear classifier: the network of ``benchmarks/plain_loop.py``, the design
note's style of adversarial training. At the same cost per image as ``madry_cnn`` width 8
(3.6M multiply-adds), it has twice the filters at the first layer and sees 3x3 neighbourhoods;
on Fashion-MNIST at Linf 0.1 it trained to higher worst-case robustness in a 10-minute budget
(``benchmarks/budget.py``). The width multiplier ``w`` gives filters (4w, 8w) and 32w hidden
units, so w=8 is the reference network.
"""

import torch
from torch import nn

DEFAULT_WIDTH = 8


class CompactCNN(nn.Module):
    """conv3x3(4w)-pool-conv3x3(8w)-pool-FC(32w)-FC(classes), all ReLU."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, width: int = DEFAULT_WIDTH
    ) -> None:
        super().__init__()
        if image_size < 4:
            raise ValueError(f"compact_cnn needs image_size >= 4, got {image_size}")
        if width < 1:
            raise ValueError(f"compact_cnn width must be >= 1, got {width}")
        side = image_size // 2 // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 4 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4 * width, 8 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(8 * width * side * side, 32 * width),
            nn.ReLU(),
            nn.Linear(32 * width, num_classes),
        )
        # He init for the ReLU layers, as madry_cnn: no batch norm corrects a bad scale.
        for m in [*self.features, self.classifier[1]]:
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
