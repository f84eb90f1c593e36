"""A small CNN for certified (IBP, CROWN-IBP) training.

The shape of the small networks of Gowal et al. 2018 and of CROWN-IBP's ``cnn_2layer``
(Zhang et al. 2020): strided 4x4 convolutions instead of max pooling and no batch norm, the
layers bound propagation bounds tightly (a max pool's box is looser than a strided conv's; batch
norm's batch statistics make the bound of a training batch another function than the certified
one). The width multiplier ``w`` gives filters (4w, 8w) and 32w hidden units: w=4 is the
(16, 32, 128) network, CROWN-IBP's width-4 ``cnn_2layer`` with a 128-unit linear layer.
Each convolution halves the side (stride 2, padding 1), so 28x28 images reach the linear layer
at 7x7 and 8x8 ones at 2x2.
"""

import torch
from torch import nn

DEFAULT_WIDTH = 4


class IbpCNN(nn.Module):
    """conv4x4/2(4w)-conv4x4/2(8w)-FC(32w)-FC(classes), all ReLU, no pooling, no batch norm."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, width: int = DEFAULT_WIDTH
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"ibp_cnn width must be >= 1, got {width}")
        if image_size < 4:
            raise ValueError(f"ibp_cnn needs image_size >= 4, got {image_size}")
        side = image_size // 2 // 2  # (s + 2 - 4) // 2 + 1 = s // 2 for each conv
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 4 * width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(4 * width, 8 * width, 4, stride=2, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(8 * width * side * side, 32 * width),
            nn.ReLU(),
            nn.Linear(32 * width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


NETWORK = IbpCNN
