"""Pre-activation ResNet-18.

He et al. 2016, "Identity Mappings in Deep Residual Networks"
(arXiv:1603.05027), in the CIFAR form used by the adversarial-training repos of
Wong et al. 2020 ("Fast is better than free", arXiv:2001.03994) and Rice et al.
2020 ("Overfitting in adversarially robust deep learning", arXiv:2002.11569):
a 3x3 stem conv, four stages of two BN-ReLU-conv basic blocks with widths
(1, 2, 4, 8) x base, a final BN-ReLU, global average pooling and a linear layer.
"""

import torch
from torch import nn

DEFAULT_WIDTH = 64
STAGE_BLOCKS = (2, 2, 2, 2)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity (or 1x1 conv) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        # As in the reference code, a projection shortcut takes the pre-activated
        # input, while the identity shortcut carries the raw input.
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = DEFAULT_WIDTH) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"preact_resnet18 width must be >= 1, got {width}")
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_planes = width
        for stage, n_blocks in enumerate(STAGE_BLOCKS):
            planes = width * 2**stage
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(PreActBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)
        # Adaptive rather than the reference's fixed 4x4 pool, so inputs other
        # than 32x32 still give one feature vector per image.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(x))
        out = self.pool(torch.relu(self.bn(out)))
        return self.linear(torch.flatten(out, 1))
