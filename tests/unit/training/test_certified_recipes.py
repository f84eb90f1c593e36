"""The certified recipes (``ibp``, ``crown_ibp``): their kappa and beta schedules along the eps
ramp, a loss that is the papers' on the bound, training that earns certificates natural training
does not, and selection by certified validation accuracy (no collapse check)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attacks import PGD
from iocane.base.config import OptimConfig
from iocane.base.layout import Layout
from iocane.certify import certified_mask, margin_lower_bounds
from iocane.model_files import load_model
from iocane.training.epoch import ramped_eps
from iocane.training.loop import fit
from iocane.training.ranks import Ranks
from iocane.training.recipes import TrainingPasses, make_recipe
from iocane.training.recipes.crown_ibp import CrownIbpRecipe
from iocane.training.recipes.ibp import IbpRecipe, certified_loss
from iocane.training.selection import catastrophic_overfitting, select_epoch
from iocane.training.validation import certified_shards
from models import ModelSpec, build_model
from tests.helpers.tiny_training import digits_split

SPEC = ModelSpec("ibp_cnn", 1, 8, 10, (0.3,), (0.4,), width=4)
EPS = 0.1


def _recipe(method: str, **fields: object) -> IbpRecipe:
    values = {
        "norm": "Linf",
        "eps": EPS,
        "eps_ramp_epochs": 2,
        "kappa_start": 1.0,
        "kappa_end": 0.5,
        "beta_start": 1.0,
        "beta_end": 0.0,
        **fields,
    }
    return make_recipe(method, **values)  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("epoch", "batch", "kappa", "beta"),
    [
        (0, 0, 1.0 - 0.5 * 0.125, 1.0 - 0.125),  # the first of 4 batches: 1/8 of the ramp
        (0, 3, 0.75, 0.5),  # the end of the first of two ramp epochs: half way
        (1, 3, 0.5, 0.0),  # the ramp's end
        (5, 1, 0.5, 0.0),  # after it: the end values
    ],
)
def test_kappa_and_beta_follow_the_eps_ramp(
    epoch: int, batch: int, kappa: float, beta: float
) -> None:
    recipe = _recipe("crown_ibp")
    assert isinstance(recipe, CrownIbpRecipe)
    eps = ramped_eps(recipe.eps, recipe.eps_ramp_epochs, epoch, batch, n_batches=4)
    assert recipe.kappa(eps) == pytest.approx(kappa)
    assert recipe.beta(eps) == pytest.approx(beta)
    assert _recipe("ibp", kappa_start=0.9, kappa_end=0.1).kappa(EPS / 2) == pytest.approx(0.5)


def test_the_loss_is_kappa_clean_plus_the_bounds_cross_entropy() -> None:
    torch.manual_seed(0)
    model = build_model(SPEC)
    data = digits_split(32, 0).train
    images, labels = data.images, data.labels
    recipe = _recipe("ibp")
    eps = EPS / 4  # a quarter of the way up the ramp: kappa 0.875
    loss, stats = certified_loss(recipe, model, images, labels, eps, TrainingPasses(model))
    margins = margin_lower_bounds(model, images, labels, norm="Linf", eps=eps, method="ibp")
    clean = F.cross_entropy(model(images), labels)
    expected = 0.875 * clean + 0.125 * F.cross_entropy(-margins, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats.adv_correct.item() == certified_mask(margins, labels).sum().item()
    assert model.training  # the bound ran in eval mode; the model is back in train mode


EPOCHS = 6  # 12 steps each; eps ramps over the first 3 (measured: a second per run)
TRAINING = OptimConfig(
    epochs=EPOCHS,
    batch_size=64,
    optimizer="adam",
    lr=0.005,
    momentum=0.9,
    weight_decay=0.0,
    lr_schedule="constant",
)
SMALL_EPS = 0.05  # of the 8x8 digits' [0, 1] range


def _fit(root: Path, recipe: IbpRecipe | None) -> dict:
    torch.manual_seed(0)
    return fit(
        stage="train",
        model=build_model(SPEC),
        spec=SPEC,
        data=digits_split(768, 128),
        optim=TRAINING,
        recipe=recipe,
        val_attack=PGD(eps=SMALL_EPS, steps=2, seed=1),
        layout=Layout(root),
        seed=3,
        run_key="key",
        device=torch.device("cpu"),
        select="best",
    )


def _certified(root: Path) -> float:
    model, _ = load_model(Layout(root).model_file("train"))
    val = digits_split(768, 128).val
    return certified_shards(model, val, norm="Linf", eps=SMALL_EPS, batch_size=64, ranks=Ranks())


@pytest.fixture(scope="module")
def natural(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, float]:
    root = tmp_path_factory.mktemp("natural")
    return _fit(root, None), _certified(root)


@pytest.mark.parametrize("method", ["ibp", "crown_ibp"])
def test_certified_training_earns_certificates_natural_training_does_not(
    tmp_path: Path, method: str, natural: tuple[dict, float]
) -> None:
    natural_metrics, natural_share = natural
    metrics = _fit(tmp_path, _recipe(method, eps=SMALL_EPS, eps_ramp_epochs=3))
    certified_share = _certified(tmp_path)
    assert natural_metrics["val_clean_accuracy"] > 0.8  # natural training did learn
    # Not a constant network's trivial certificates (one class, about 0.1): a classifier.
    assert metrics["val_clean_accuracy"] > 0.6
    assert certified_share > natural_share + 0.25, (natural_share, certified_share)
    # the history records the certified figure selection read, and the CSV has its column
    assert metrics["val_certified_accuracy"] == pytest.approx(certified_share)
    assert "val_certified_accuracy" not in natural_metrics
    with Layout(tmp_path).history_file("train").open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == EPOCHS and all(row["val_certified_accuracy"] for row in rows)


def test_an_ibp_run_resumed_after_a_lost_epoch_matches_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    recipe = _recipe("ibp", eps=SMALL_EPS, eps_ramp_epochs=3)
    uninterrupted = _fit(tmp_path / "a", recipe)
    interrupted = Layout(tmp_path / "b")
    _fit(interrupted.root, recipe)
    # As if the process died during the last epoch: its checkpoint and the model never landed.
    (interrupted.checkpoint_dir("train") / f"epoch-{EPOCHS:04d}.pt").unlink()
    interrupted.model_file("train").unlink()
    resumed = _fit(interrupted.root, recipe)
    assert resumed["resumed_after_epoch"] == EPOCHS - 1
    for key in ("val_clean_accuracy", "val_certified_accuracy", "selected_epoch"):
        assert resumed[key] == uninterrupted[key], key
    reference = load_model(Layout(tmp_path / "a").model_file("train"))[0].state_dict()
    weights = load_model(interrupted.model_file("train"))[0].state_dict()
    assert all(torch.equal(reference[key], weights[key]) for key in reference)


def test_selection_keeps_the_best_certified_epoch_and_never_sees_a_collapse() -> None:
    history = [
        {"epoch": 1, "val_adv_accuracy": 0.70, "val_certified_accuracy": 0.10},
        {"epoch": 2, "val_adv_accuracy": 0.40, "val_certified_accuracy": 0.35},
        {"epoch": 3, "val_adv_accuracy": 0.45, "val_certified_accuracy": 0.30},
    ]
    assert select_epoch(history, "best", None) == 2
    assert not catastrophic_overfitting(history[:2])  # PGD fell by 0.3: a ramp, not a collapse
    plain = [{key: row[key] for key in ("epoch", "val_adv_accuracy")} for row in history]
    assert select_epoch(plain, "best", None) == 1
    assert catastrophic_overfitting(plain[:2])  # the same fall without certificates is one
