"""A user's own data and model as a new iocane user brings them: a folder of real PNG and JPEG
files of two sizes, and a torchvision ResNet-18 trained on it by the user's own torchvision
pipeline (``Resize`` + ``CenterCrop`` at 32 pixels, ImageNet ``Normalize``), saved as a
state_dict. The tests of the README's "Harden your own model" commands use both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms

from tests.helpers.image_folder import write_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIDE = 32  # the user trained at 32 pixels
CLASSES = ("bottom", "top")  # where the bright band is


def band_image(rng: np.random.Generator, label: int, side: int) -> np.ndarray:
    """An RGB image whose top or bottom half is brighter by 30 to 50 levels, under noise of 0 to
    120 levels. A model can keep that class at configs/own_model.yaml's Linf eps of 8 levels
    (the attacker narrows the gap between the halves by at most 16), but the user's natural
    model does not: PGD turns every test image of it (robust accuracy 0) until iocane hardens
    it."""
    pixels = rng.uniform(0, 120, size=(side, side, 3))
    rows = slice(0, side // 2) if label == 1 else slice(side // 2, side)
    pixels[rows] += rng.uniform(30, 50, size=3)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_user_folder(root: Path, train_per_class: int = 16, test_per_class: int = 6) -> Path:
    """``root/{train,test}/<class>/`` with PNG and JPEG files of 28 and 36 pixels, alternating."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(CLASSES):
            for index in range(count):
                side, suffix = ((28, ".png"), (36, ".jpg"), (36, ".png"), (28, ".jpg"))[index % 4]
                pixels = band_image(rng, label, side)
                write_image(root / split / name / f"{index:03d}{suffix}", pixels)
    return root


def user_transform(normalize: bool = True) -> transforms.Compose:
    """The user's own evaluation pipeline, as torchvision's tutorials write it (``normalize``
    False: the same without ImageNet's ``Normalize``, the mistake a test shows would show)."""
    steps = [transforms.Resize(SIDE), transforms.CenterCrop(SIDE), transforms.ToTensor()]
    if normalize:
        steps.append(transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return transforms.Compose(steps)


def train_user_model(
    root: Path, weights: Path, builder: str = "resnet18", epochs: int = 15
) -> nn.Module:
    """Train torchvision's ``builder`` on ``root/train`` as a user would, save its state_dict to
    ``weights``, and return the trained model. 15 epochs (30 steps) bring batch norm's running
    statistics near the data's, as a user's converged training does: after two, the model in
    eval mode still saw other statistics than in training, and adversarial examples crafted in
    eval mode did not fool it in train mode, so hardening learnt nothing."""
    torch.manual_seed(0)
    model = models.get_model(builder, num_classes=len(CLASSES))
    train = datasets.ImageFolder(str(root / "train"), transform=user_transform())
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for images, labels in DataLoader(train, batch_size=16, shuffle=True):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimiser.step()
    torch.save(model.state_dict(), weights)
    return model


@torch.no_grad()
def user_accuracy(model: nn.Module, folder: Path, normalize: bool = True) -> float:
    """The user's own figure: accuracy on ``folder`` through the user's pipeline (without its
    ``Normalize`` when ``normalize`` is False)."""
    model.eval()
    test = datasets.ImageFolder(str(folder), transform=user_transform(normalize))
    correct = sum(
        int((model(images).argmax(1) == labels).sum()) for images, labels in DataLoader(test, 64)
    )
    return correct / len(test)
