"""A small plain CNN, the default model for the scikit-learn 8x8 digits.

Not from a paper: a three-conv ReLU network sized so that PGD adversarial
training on digits (1x8x8) runs in seconds on a CPU. It has no batch norm so
the network computes the same function in train and eval mode, which keeps the
attack run during training identical to the attack run at evaluation.
"""

import torch
from torch import nn

DEFAULT_WIDTH = 32
HIDDEN_UNITS = 128
# Feature maps are pooled to this side length before the classifier, so the FC
# size does not grow with the image; for 8x8 inputs the pool is the identity.
POOLED_SIZE = 4


class SmallCNN(nn.Module):
    """conv(w)-conv(2w)-maxpool-conv(2w)-pool-FC(128)-FC(classes), all ReLU."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, width: int = DEFAULT_WIDTH
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"small_cnn needs image_size >= 8, got {image_size}")
        if width < 1:
            raise ValueError(f"small_cnn width must be >= 1, got {width}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(POOLED_SIZE),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * POOLED_SIZE * POOLED_SIZE, HIDDEN_UNITS),
            nn.ReLU(),
            nn.Linear(HIDDEN_UNITS, num_classes),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _init_weights(model: nn.Module) -> None:
    # He init (fan_in) keeps activation variance stable through the ReLU stack;
    # without batch norm nothing else would correct a badly scaled start.
    hidden = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)][:-1]
    for m in hidden:
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)


NETWORK = SmallCNN
