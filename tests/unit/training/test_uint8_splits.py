"""Training and validation on a split stored as uint8 (how prepare keeps image datasets) give
exactly what they give on the same images converted to float32 up front, as load_prepared
used to: the same weights after an epoch (pgd and free, whose perturbation has the batch's
shape) and the same validation figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from attacks import PGD
from iocane.base.config import OptimConfig
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData, Split
from iocane.training.loop import fit
from iocane.training.validation import evaluate_split
from models import ModelSpec, build_model
from tests.helpers.tiny_training import adversarial_recipe

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=4)


def _splits() -> tuple[PreparedData, PreparedData]:
    """The same 160 digits, as uint8 storage and as the float32 the old load gave."""
    digits = load_digits()
    pixels = np.round(digits.images[:160] * (255 / 16)).astype(np.uint8)[:, None]
    floats = pixels.astype(np.float32) / 255.0
    labels = torch.tensor(digits.target[:160])

    def data(images: np.ndarray) -> PreparedData:
        tensor = torch.from_numpy(images)
        return PreparedData(
            Split(tensor[:128], labels[:128]), Split(tensor[128:], labels[128:]), None, meta={}
        )

    return data(pixels), data(floats)


@pytest.mark.parametrize("method", ["pgd", "free"])
def test_fit_on_uint8_equals_fit_on_float(tmp_path: Path, method: str) -> None:
    stored, converted = _splits()
    assert stored.train.pixels.dtype == torch.uint8
    recipe = adversarial_recipe(
        norm="Linf",
        eps=0.1,
        step_size=0.05,
        steps=2,
        random_start=True,
        adv_weight=1.0,
        eps_ramp_epochs=0,
        method=method,
        free_replays=2,
    )
    optim = OptimConfig(
        epochs=1, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.0, lr_schedule="constant"
    )
    models = {}
    for name, data in (("stored", stored), ("converted", converted)):
        torch.manual_seed(0)
        models[name] = build_model(SPEC)
        fit(
            stage="train",
            model=models[name],
            spec=SPEC,
            data=data,
            optim=optim,
            recipe=recipe,
            val_attack=PGD(eps=0.1, steps=2, seed=1),
            layout=Layout(tmp_path / name),
            seed=3,
            run_key="key",
            device=torch.device("cpu"),
        )
    for key, value in models["stored"].state_dict().items():
        assert torch.equal(value, models["converted"].state_dict()[key]), key


def test_validation_figures_equal() -> None:
    stored, converted = _splits()
    torch.manual_seed(0)
    model = build_model(SPEC)
    attack = PGD(eps=0.1, steps=2, seed=1)
    assert evaluate_split(model, stored.val, attack, 7) == evaluate_split(
        model, converted.val, attack, 7
    )
