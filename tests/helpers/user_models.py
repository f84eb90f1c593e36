"""A user's own model code, as ``model.name: <module>:<factory>`` names it (the tests import it
as ``tests.helpers.user_models`` or copy it into a project directory as ``user_models.py``)."""

from __future__ import annotations

from torch import nn


def tiny_net(channels: int, image_size: int, num_classes: int) -> nn.Module:
    """A small convolutional classifier: conv, pool, and a linear head (the last Linear)."""
    return nn.Sequential(
        nn.Conv2d(channels, 8, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4, num_classes),
    )


def not_a_network(channels: int, image_size: int, num_classes: int) -> str:
    """A factory that returns something else than an nn.Module."""
    return f"{channels}x{image_size} -> {num_classes}"
