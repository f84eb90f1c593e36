"""The spatial grid (attacks/spatial.py) against known answers: a model invariant to the grid's
transforms comes out robust, one that breaks under a rotation comes out broken, a finer grid
never raises accuracy, no grid gives the clean accuracy, and the search is deterministic. The
first-order SpatialPGD on the same known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.spatial import SpatialGrid, SpatialPGD, grid_points, transform


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


class MassModel(nn.Module):
    """Class 1 when the image's total brightness passes a threshold: rotations and shifts that
    keep the object in the frame move mass around without changing it (up to interpolation)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mass = images.sum(dim=(1, 2, 3))
        return torch.stack([30.0 - mass, mass - 30.0], dim=1)


class UprightModel(nn.Module):
    """Class 0 for a bar standing up (the centre column outweighs the centre row), class 1 for a
    bar lying down: a quarter turn flips its answer."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        middle = images.shape[-1] // 2
        column = images[:, 0, :, middle - 1 : middle + 1].sum(dim=(1, 2))
        row = images[:, 0, middle - 1 : middle + 1, :].sum(dim=(1, 2))
        return torch.stack([column - row, row - column], dim=1)


def _blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """16x16 images with a centred blob of mass 10 (class 0) or 60 (class 1), well inside."""
    offsets = torch.arange(16) - 7.5
    radius = (offsets[:, None] ** 2 + offsets[None, :] ** 2).sqrt()
    blob = torch.exp(-(radius**2) / 4.0)
    images = torch.stack(
        [blob * (10.0 if index % 2 == 0 else 60.0) / blob.sum() for index in range(6)]
    )
    return images[:, None].clamp(0, 1), torch.tensor([index % 2 for index in range(6)])


def _bars() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.zeros(4, 1, 16, 16)
    images[:, :, 3:13, 7:9] = 1.0  # upright bars
    return images, torch.zeros(4, dtype=torch.int64)


def test_a_model_invariant_to_the_grid_comes_out_robust() -> None:
    images, labels = _blobs()
    model = MassModel()
    assert _accuracy(model, images, labels) == 1.0
    worst = SpatialGrid(rotate=30, translate=3, rotations=7, translations=7)(model, images, labels)
    assert _accuracy(model, worst, labels) == 1.0
    assert not torch.equal(
        worst, images
    )  # it did move them: the highest-loss point, not the identity


def test_a_model_a_quarter_turn_breaks_comes_out_broken() -> None:
    images, labels = _bars()
    model = UprightModel()
    assert _accuracy(model, images, labels) == 1.0
    assert (
        _accuracy(model, SpatialGrid(10, 0, 3, 1)(model, images, labels), labels) == 1.0
    )  # a tilt keeps it
    worst = SpatialGrid(rotate=90, translate=0, rotations=3, translations=1)(model, images, labels)
    assert _accuracy(model, worst, labels) == 0.0
    # The example kept is the bar turned a quarter: its mass now lies along the centre row.
    assert torch.allclose(worst[:, 0, 7:9, 3:13], torch.ones(4, 2, 10), atol=1e-5)


def test_a_finer_grid_never_raises_accuracy(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    coarse = SpatialGrid(rotate=20, translate=1, rotations=3, translations=3)
    fine = SpatialGrid(rotate=20, translate=1, rotations=5, translations=5)
    assert set(map(tuple, grid_points(20, 1, 3, 3).tolist())) <= set(
        map(tuple, grid_points(20, 1, 5, 5).tolist())
    )
    clean = _accuracy(model, images, labels)
    coarse_accuracy = _accuracy(model, coarse(model, images, labels), labels)
    fine_accuracy = _accuracy(model, fine(model, images, labels), labels)
    assert fine_accuracy <= coarse_accuracy < clean  # and the grid does break some digits


def test_no_rotation_and_no_shift_give_the_clean_images(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    worst = SpatialGrid(rotate=0, translate=0, rotations=3, translations=3)(model, images, labels)
    assert torch.equal(worst, images)


def test_the_search_is_deterministic_and_leaves_the_model_alone(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    attack = SpatialGrid(rotate=15, translate=1, rotations=5, translations=3, seed=3)
    gradients = [
        None if parameter.grad is None else parameter.grad.clone()
        for parameter in model.parameters()
    ]
    first, second = attack(model, images, labels), attack(model, images, labels)
    assert torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 1 and first.shape == images.shape
    assert not model.training
    for parameter, before in zip(model.parameters(), gradients, strict=True):
        assert (parameter.grad is None and before is None) or torch.equal(parameter.grad, before)
    assert attack.name == "spatial_grid"


def test_the_grid_is_mildest_first_and_holds_the_identity() -> None:
    points = grid_points(30, 2, 7, 5)
    assert points.shape == (35 * 5, 3)
    assert torch.equal(points[0], torch.zeros(3, dtype=torch.float64))
    assert sorted(set(points[:, 0].tolist())) == [-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0]
    images = torch.rand(2, 3, 9, 12)
    moved = transform(images, points[:1])
    assert torch.equal(moved, images)  # the identity is bit-identical


def test_a_whole_pixel_shift_moves_the_image_by_that_pixel() -> None:
    images = torch.rand(1, 1, 6, 10)
    moved = transform(images, torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64))
    assert torch.allclose(moved[0, 0, 2:, 1:], images[0, 0, :-2, :-1], atol=1e-6)
    assert torch.equal(moved[0, 0, :2], torch.zeros(2, 10)) and torch.equal(
        moved[0, 0, :, 0], torch.zeros(6)
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rotations", 0),
        ("translations", 0),
        ("rotations", 2.5),
        ("rotate", -1.0),
        ("translate", "3"),
    ],
)
def test_a_bad_grid_is_refused_at_construction_naming_it(field: str, value: object) -> None:
    arguments = {"rotate": 10.0, "translate": 1.0, "rotations": 3, "translations": 3, field: value}
    with pytest.raises(ValueError, match=f"spatial grid: {field} "):
        SpatialGrid(**arguments)


def test_spatial_pgd_on_the_known_answers(trained_digits_model) -> None:
    blobs, blob_labels = _blobs()
    invariant = SpatialPGD(rotate=30, translate=3, steps=5, restarts=2)(
        MassModel(), blobs, blob_labels
    )
    assert _accuracy(MassModel(), invariant, blob_labels) == 1.0
    bars, bar_labels = _bars()
    turned = SpatialPGD(rotate=90, translate=0, steps=10, restarts=2)(
        UprightModel(), bars, bar_labels
    )
    assert _accuracy(UprightModel(), turned, bar_labels) == 0.0
    model, images, labels = trained_digits_model
    assert torch.equal(SpatialPGD(0, 0)(model, images, labels), images)
    gradients = [
        None if parameter.grad is None else parameter.grad.clone()
        for parameter in model.parameters()
    ]
    attack = SpatialPGD(rotate=20, translate=2, steps=5, seed=1)
    first, second = attack(model, images[:64], labels[:64]), attack(model, images[:64], labels[:64])
    assert torch.equal(first, second) and first.min() >= 0 and first.max() <= 1
    assert _accuracy(model, first, labels[:64]) < _accuracy(model, images[:64], labels[:64])
    assert not model.training and attack.name == "spatial_pgd"
    for parameter, before in zip(model.parameters(), gradients, strict=True):
        assert (parameter.grad is None and before is None) or torch.equal(parameter.grad, before)
