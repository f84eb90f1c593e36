"""The ``gaussian`` recipe (Cohen et al. 2019's base classifier for randomized smoothing):
its noise, its loss, its config key, and one real training step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attacks.threat import make_generator
from iocane.base.config import ConfigError, config_from_dict, load_config
from iocane.training.recipes import make_recipe
from iocane.training.recipes.gaussian import GaussianNoise, GaussianRecipe
from tests.helpers.models import TinyLinear
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.tiny_training import fit_one_epoch

PARAMS = load_config(PROJECT_ROOT / "params.yaml")
SIGMA = 0.5


def _recipe(sigma: float = SIGMA) -> GaussianRecipe:
    recipe = make_recipe(
        "gaussian", norm="Linf", eps=0.1, eps_ramp_epochs=0, noise_sigma=sigma, adv_weight=1.0
    )
    assert isinstance(recipe, GaussianRecipe)
    return recipe


def _images(n: int = 4000) -> torch.Tensor:
    return torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(1))


def test_the_noise_has_the_configured_sigma_is_not_clipped_and_follows_its_seed() -> None:
    images = _images()
    state = torch.get_rng_state()
    noisy = _recipe().attack(0.1, seed=7)(None, images, None)
    assert torch.equal(torch.get_rng_state(), state), "the global stream is untouched"
    noise = noisy - images
    assert noise.mean().item() == pytest.approx(0, abs=0.02)
    assert noise.std().item() == pytest.approx(SIGMA, rel=0.03)
    assert noisy.min() < 0 and noisy.max() > 1, "not clipped to [0, 1], as Cohen et al."
    assert torch.equal(noisy, GaussianNoise(sigma=SIGMA, seed=7)(None, images, None))
    assert not torch.equal(noisy, _recipe().attack(0.1, seed=8)(None, images, None))


def test_the_noise_ignores_the_ramped_eps() -> None:
    images = _images(16)
    early = _recipe().attack(0.001, seed=3)(None, images, None)
    assert torch.equal(early, _recipe().attack(0.1, seed=3)(None, images, None))


def test_the_loss_is_cross_entropy_on_the_noisy_images_alone() -> None:
    torch.manual_seed(0)
    model = TinyLinear(torch.randn(3, 4), torch.randn(3))
    images, labels = _images(32), torch.arange(32) % 3
    recipe = _recipe()
    loss, stats = recipe.loss(model, images, labels, recipe.attack(0.1, seed=5))
    noise = torch.randn(images.shape, generator=make_generator(5, images.device))
    expected = F.cross_entropy(model(images + SIGMA * noise), labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats.adv_loss.item() == pytest.approx(expected.item() * 32, rel=1e-6)
    clean = F.cross_entropy(model(images), labels).item() * 32
    assert stats.clean_loss.item() == pytest.approx(clean, rel=1e-6)


def test_noise_sigma_is_optional_and_must_be_positive() -> None:
    document = PARAMS.to_dict()
    del document["train"]["noise_sigma"]  # a params file written before the key
    assert config_from_dict(document).train.noise_sigma == PARAMS.train.noise_sigma
    document["train"].update(method="gaussian", noise_sigma=0.0)
    with pytest.raises(ConfigError, match=r"train\.noise_sigma"):
        config_from_dict(document)
    with pytest.raises(ValueError, match=r"train\.noise_sigma"):
        _recipe(sigma=-1.0)


def test_a_training_run_is_reproducible_and_differs_from_natural_training(
    tmp_path: Path,
) -> None:
    trained = fit_one_epoch(_recipe(), tmp_path / "a")
    again = fit_one_epoch(_recipe(), tmp_path / "b")
    natural = fit_one_epoch(None, tmp_path / "natural")
    assert all(torch.equal(trained[name], again[name]) for name in trained)
    assert not all(torch.equal(trained[name], natural[name]) for name in trained)
