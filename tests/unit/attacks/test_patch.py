"""Known answers for the patch attacks (``attacks.patch``): a model with a planted trigger (a bright
square anywhere flips it) comes out broken at the trigger's side and robust one pixel below it; a
model reading the image's mean, which no small square can move past its margin, comes out robust,
and broken once the patch is the whole image; more queries or steps never leave more points
robust; the patch stays within its side on 1 and 3 channels; same seed, same examples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.patch import PatchPGD, PatchRS, paste
from attacks.threat import pixel_budget, threat_model

SIDE, IMAGE = 3, 8
THRESHOLD = 0.9  # window brightness above which the trigger fires
TEMPERATURE = 0.02  # of the smooth max over windows: it exceeds the max by at most T log(windows)


class PlantedTrigger(nn.Module):
    """Class 1 when some SIDE x SIDE window is bright on average (over its pixels and channels),
    else class 0. The score is a smooth max over windows (so gradients reach every window), at
    most the brightest window's mean + TEMPERATURE * log(windows)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        windows = F.avg_pool2d(images.mean(1, keepdim=True), SIDE, stride=1).flatten(1)
        score = TEMPERATURE * torch.logsumexp(windows / TEMPERATURE, dim=1)
        return torch.stack([10 * (THRESHOLD - score), 10 * (score - THRESHOLD)], dim=1)


class ReadsTheMean(nn.Module):
    """Class 1 when the image's mean brightness passes 0.5, else class 0."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.flatten(1).mean(1)
        return torch.stack([10 * (0.5 - mean), 10 * (mean - 0.5)], dim=1)


def _dark_images(n: int, channels: int = 1, top: float = 0.4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand((n, channels, IMAGE, IMAGE), generator=generator) * top


def _robust_accuracy(model: nn.Module, attack, images: torch.Tensor) -> float:
    labels = torch.zeros(len(images), dtype=torch.int64)
    adversarial = attack(model, images, labels)
    assert threat_model("patch").norm(adversarial - images).max() <= attack.eps
    with torch.no_grad():
        return (model(adversarial).argmax(1) == labels).float().mean().item()


def _attacks(side: int) -> list:
    return [PatchRS(eps=side, n_queries=150), PatchPGD(eps=side, steps=10, locations=2)]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("attack_index", [0, 1], ids=["patch_rs", "patch_pgd"])
def test_a_planted_trigger_is_found_at_its_side_and_not_below(channels, attack_index) -> None:
    images, model = _dark_images(16, channels), PlantedTrigger()
    windows = (IMAGE - SIDE + 1) ** 2
    # Below the side, no patch can fire it: a (SIDE-1)^2 white square in the brightest window
    # leaves its mean at most ((SIDE-1)^2 + (2*SIDE-1) * 0.4) / SIDE^2, plus the smooth max's slack.
    best_below = ((SIDE - 1) ** 2 + (2 * SIDE - 1) * 0.4) / SIDE**2
    assert best_below + TEMPERATURE * math.log(windows) < THRESHOLD
    assert _robust_accuracy(model, _attacks(SIDE)[attack_index], images) == 0.0
    assert _robust_accuracy(model, _attacks(SIDE - 1)[attack_index], images) == 1.0


@pytest.mark.parametrize("attack_index", [0, 1], ids=["patch_rs", "patch_pgd"])
def test_a_model_no_square_can_move_is_robust_until_the_patch_is_the_image(attack_index) -> None:
    images, model = _dark_images(16, top=0.2), ReadsTheMean()
    # A SIDE x SIDE patch moves the mean by at most SIDE^2 / IMAGE^2: never past 0.5 from <= 0.2.
    assert 0.2 + SIDE**2 / IMAGE**2 < 0.5
    assert _robust_accuracy(model, _attacks(SIDE)[attack_index], images) == 1.0
    # A patch the image's side (or larger: it is then the whole image) sets every pixel.
    assert _robust_accuracy(model, _attacks(IMAGE)[attack_index], images) == 0.0
    assert _robust_accuracy(model, _attacks(IMAGE + 4)[attack_index], images) == 0.0


def _random_problem(channels: int = 1) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A fixed random small CNN and images it labels itself: every point starts correct."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(channels, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)
    ).eval()
    images = torch.rand(48, channels, IMAGE, IMAGE)
    with torch.no_grad():
        labels = model(images).argmax(1)
    return model, images, labels


def _survivors(model: nn.Module, attack, images: torch.Tensor, labels: torch.Tensor):
    with torch.no_grad():
        return model(attack(model, images, labels)).argmax(1) == labels


@pytest.mark.parametrize(
    ("weaker", "stronger"),
    [
        (PatchRS(eps=2, n_queries=20), PatchRS(eps=2, n_queries=200)),
        (PatchPGD(eps=2, steps=3, locations=1), PatchPGD(eps=2, steps=10, locations=4)),
    ],
    ids=["patch_rs", "patch_pgd"],
)
def test_more_queries_or_steps_never_leave_more_points_robust(weaker, stronger) -> None:
    model, images, labels = _random_problem()
    weak, strong = (_survivors(model, a, images, labels) for a in (weaker, stronger))
    assert 0 < weak.float().mean() < 1  # the weaker one has work left to do
    assert strong.float().mean() <= weak.float().mean()
    if isinstance(weaker, PatchRS):  # its longer run repeats the shorter one's queries first
        assert not (strong & ~weak).any()


@pytest.mark.parametrize("attack_class", [PatchRS, PatchPGD])
@pytest.mark.parametrize("channels", [1, 3])
def test_the_patch_stays_in_its_square_and_is_deterministic(attack_class, channels) -> None:
    model, images, labels = _random_problem(channels)
    budget = {"n_queries": 50} if attack_class is PatchRS else {"steps": 5}
    first = attack_class(eps=3, seed=5, **budget)(model, images, labels)
    torch.manual_seed(123)  # the global generator moves on: the attack must not depend on it
    assert torch.equal(first, attack_class(eps=3, seed=5, **budget)(model, images, labels))
    assert not torch.equal(first, attack_class(eps=3, seed=6, **budget)(model, images, labels))
    changed = (first != images).any(dim=1)  # (N, H, W), exact: untouched pixels are bit-equal
    assert threat_model("patch").norm(first - images).max() <= 3
    assert changed.flatten(1).sum(1).max() <= 9 and changed.any()
    assert first.min() >= 0 and first.max() <= 1


def test_paste_writes_each_patch_at_its_place_and_nothing_else() -> None:
    images = torch.rand(2, 3, 5, 6)
    content = torch.rand(2, 3, 2, 2)
    top, left = torch.tensor([0, 3]), torch.tensor([4, 1])
    pasted = paste(images, content, top, left)
    expected = images.clone()
    expected[0, :, 0:2, 4:6] = content[0]
    expected[1, :, 3:5, 1:3] = content[1]
    assert torch.equal(pasted, expected)


def test_the_side_is_a_whole_number_of_pixels() -> None:
    model, images, labels = _random_problem()
    assert pixel_budget(3.0) == 3 and pixel_budget(0) == 0
    for bad in (2.5, -1, True):
        with pytest.raises(ValueError, match="eps"):
            pixel_budget(bad)
    with pytest.raises(ValueError, match="eps"):
        PatchRS(eps=2.5)(model, images, labels)
    with pytest.raises(ValueError, match="norm must be 'patch'"):
        PatchPGD(eps=2, norm="L0")(model, images, labels)
    assert torch.equal(PatchPGD(eps=0)(model, images, labels), images)
    assert torch.equal(PatchRS(eps=0)(model, images, labels), images)
