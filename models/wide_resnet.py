"""Wide residual network WRN-depth-k.

Zagoruyko & Komodakis 2016, "Wide Residual Networks" (arXiv:1605.07146), in the
form used for CIFAR-10 adversarial training by Madry et al. 2018 and by TRADES
(Zhang et al. 2019, arXiv:1901.08573): WRN-34-10 / WRN-28-10, three groups of
pre-activation basic blocks with widths (16k, 32k, 64k), no dropout.
"""

import torch
from torch import nn

DEFAULT_DEPTH = 28
DEFAULT_WIDEN = 10


def blocks_per_group(depth: int) -> int:
    """Blocks in each of the three groups; ``depth = 6n + 4``."""
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(
            f"wide_resnet depth must be 6n+4 with n >= 1 (e.g. 10, 16, 28, 34), got depth={depth}"
        )
    return (depth - 4) // 6


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-conv shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
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
        # Matches the reference WRN: when the shape changes the projection is
        # applied to the pre-activated input, otherwise the raw input is added.
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv2(torch.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class WideResNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = DEFAULT_DEPTH,
        widen_factor: int = DEFAULT_WIDEN,
    ) -> None:
        super().__init__()
        n = blocks_per_group(depth)
        if widen_factor < 1:
            raise ValueError(f"wide_resnet widen factor must be >= 1, got {widen_factor}")
        channels = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        groups: list[nn.Module] = []
        for g in range(3):
            stride = 1 if g == 0 else 2
            blocks = [WideBasicBlock(channels[g], channels[g + 1], stride)]
            blocks += [WideBasicBlock(channels[g + 1], channels[g + 1], 1) for _ in range(n - 1)]
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(channels[3])
        # Adaptive instead of the reference avg_pool2d(8): same result at 32x32,
        # and still one vector per image at other sizes.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.pool(torch.relu(self.bn(out)))
        return self.fc(torch.flatten(out, 1))
