"""A tiny model and digits split for training-loop unit tests (seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits

from iocane.base.config import OptimConfig
from iocane.data.prepared import PreparedData, Split
from models import ModelSpec, build_model

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=4)


def digits_split(n_train: int = 128, n_val: int = 64) -> PreparedData:
    """The first ``n_train`` digits to train on and the next ``n_val`` to validate on."""
    digits = load_digits()
    total = n_train + n_val
    images = torch.tensor(digits.images[:total] / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target[:total])
    return PreparedData(
        Split(images[:n_train], labels[:n_train]),
        Split(images[n_train:], labels[n_train:]),
        None,
        meta={},
    )


def digits_held_out(n_train: int = 240, n_held_out: int = 60) -> PreparedData:
    """The first ``n_train`` digits to train on and the next ``n_held_out`` as both the
    validation and the test split (the budget and retention tests' data)."""
    digits = load_digits()
    total = n_train + n_held_out
    images = torch.tensor(digits.images[:total] / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target[:total])
    held_out = Split(images[n_train:], labels[n_train:])
    return PreparedData(Split(images[:n_train], labels[:n_train]), held_out, held_out, meta={})


def constant_lr(epochs: int, batch_size: int = 32) -> OptimConfig:
    """SGD at lr 0.05 with momentum, no weight decay, no schedule: the loop tests' optimiser."""
    return OptimConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=0.05,
        momentum=0.9,
        weight_decay=0.0,
        lr_schedule="constant",
    )


def fit_held_out(
    root: Path, spec: ModelSpec, optim: OptimConfig, recipe: Any, **options: Any
) -> dict:
    """``fit`` of the ``train`` stage on ``digits_held_out`` from a fixed seed, validated by a
    two-step PGD: the budget and retention tests' run (``options`` are fit's other arguments)."""
    from attacks import PGD
    from iocane.base.layout import Layout
    from iocane.training.loop import fit

    torch.manual_seed(0)
    return fit(
        stage="train",
        model=build_model(spec),
        spec=spec,
        data=digits_held_out(),
        optim=optim,
        recipe=recipe,
        val_attack=PGD(eps=0.1, steps=2, seed=1),
        layout=Layout(root),
        seed=5,
        run_key="key",
        device=torch.device("cpu"),
        **options,
    )


def fit_one_epoch(recipe: Any, root: Path) -> dict[str, torch.Tensor]:
    """One epoch of ``recipe`` (None: natural training) on 32 digits from a fixed seed: the
    trained weights (the recipe tests compare runs by them)."""
    from attacks import PGD
    from iocane.base.layout import Layout
    from iocane.training.loop import fit

    torch.manual_seed(0)
    model = build_model(SPEC)
    fit(
        stage="train",
        model=model,
        spec=SPEC,
        data=digits_split(n_train=32, n_val=16),
        optim=constant_lr(epochs=1),
        recipe=recipe,
        val_attack=PGD(eps=0.1, steps=2, seed=1),
        layout=Layout(root),
        seed=3,
        run_key="key",
        device=torch.device("cpu"),
    )
    return model.state_dict()


# The recipe-specific keys' values the recipe tests were written with (params.yaml has its own).
RECIPE_TEST_VALUES = {
    "trades_beta": 6.0,
    "alp_weight": 0.5,
    "free_replays": 4,
    "multi_other_eps": 0.5,
    # Lp threats only: their PGD never waits on the host (the no-sync tests run every recipe);
    # tests/unit/training/test_multi_threat.py trains against the pixel and spatial threats.
    "threats": {"linf": 0.1, "l2": 0.5},
    "threat_mode": "mixed",
    # ibp, crown_ibp: the papers' schedules (Gowal et al. 2018, Zhang et al. 2020)
    "kappa_start": 1.0,
    "kappa_end": 0.5,
    "beta_start": 1.0,
    "beta_end": 0.0,
    "noise_sigma": 0.25,  # gaussian: Cohen et al.'s middle noise level
}


def adversarial_recipe(method: str = "pgd", **fields: Any) -> Any:
    """The recipe ``method`` built from ``fields``, which may hold other recipes' keys too (as
    the ``train`` section does); the recipe-specific keys default to ``RECIPE_TEST_VALUES``."""
    from iocane.training.recipes import make_recipe

    return make_recipe(method, **{**RECIPE_TEST_VALUES, **fields})
