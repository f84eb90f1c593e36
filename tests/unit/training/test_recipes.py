"""Training recipes: each loss against a hand computation, the attacks they craft with,
catastrophic-overfitting detection, best-checkpoint selection and determinism under a seed."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import iocane.training.epoch
import iocane.training.validation
from attacks import PGD
from attacks.threat import make_generator
from iocane.base.config import OptimConfig
from iocane.base.errors import TrainingDiverged
from iocane.base.layout import Layout
from iocane.model_files import load_model
from iocane.training.loop import fit
from iocane.training.recipes import (
    METHODS,
    Recipe,
    mixed_cross_entropy,
    training_loss,
)
from iocane.training.recipes.alp import alp_objective
from iocane.training.recipes.free import free_step
from iocane.training.recipes.trades import trades_objective
from iocane.training.selection import catastrophic_overfitting, select_epoch
from models import build_model
from tests.helpers.models import TinyLinear
from tests.helpers.tiny_training import SPEC, adversarial_recipe, constant_lr, digits_split

CLEAN = [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]]
ADV = [[0.5, 1.5, -0.5], [0.0, 1.0, 0.4]]
LABELS = [0, 2]


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(value) for value in row]
    return [value / sum(exps) for value in exps]


def _ce(rows: list[list[float]]) -> float:
    return sum(
        -math.log(_softmax(row)[label]) for row, label in zip(rows, LABELS, strict=True)
    ) / len(rows)


def _tensors():
    return torch.tensor(CLEAN), torch.tensor(ADV), torch.tensor(LABELS)


@pytest.mark.parametrize("adv_weight", [0.5, 1.0])
def test_mixed_cross_entropy_by_hand(adv_weight: float) -> None:
    clean, adv, labels = _tensors()
    expected = (1 - adv_weight) * _ce(CLEAN) + adv_weight * _ce(ADV)
    assert mixed_cross_entropy(clean, adv, labels, adv_weight).item() == pytest.approx(expected)


def test_trades_objective_by_hand() -> None:
    clean, adv, labels = _tensors()
    kl = 0.0
    for clean_row, adv_row in zip(CLEAN, ADV, strict=True):
        p, q = _softmax(clean_row), _softmax(adv_row)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = _ce(CLEAN) + 6.0 * kl / 2
    assert trades_objective(clean, adv, labels, beta=6.0).item() == pytest.approx(expected)


def test_alp_objective_by_hand() -> None:
    clean, adv, labels = _tensors()
    distance = (
        sum(
            sum((c - a) ** 2 for c, a in zip(clean_row, adv_row, strict=True))
            for clean_row, adv_row in zip(CLEAN, ADV, strict=True)
        )
        / 2
    )
    expected = 0.5 * _ce(CLEAN) + 0.5 * _ce(ADV) + 0.3 * distance
    assert alp_objective(clean, adv, labels, 0.5, 0.3).item() == pytest.approx(expected)


def _linear() -> TinyLinear:
    torch.manual_seed(0)
    return TinyLinear(torch.randn(3, 4), torch.randn(3))


def _recipe(method: str, **fields) -> Recipe:
    values = {
        "norm": "Linf",
        "eps": 0.1,
        "step_size": 0.05,
        "steps": 3,
        "random_start": True,
        "adv_weight": 1.0,
        "eps_ramp_epochs": 0,
        "method": method,
    }
    return adversarial_recipe(**{**values, **fields})


def _input_gradient(model: TinyLinear, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d CE(sum) / d x for a linear model, by hand: W^T (softmax(z) - onehot(y))."""
    weight, bias = model.linear.weight.detach(), model.linear.bias.detach()
    probs = torch.softmax(images.flatten(1) @ weight.T + bias, dim=1)
    return ((probs - F.one_hot(labels, 3)) @ weight).view_as(images)


def test_fgsm_rs_is_one_step_of_1_25_eps_from_a_random_start() -> None:
    model = _linear()
    images = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0, 1])
    attack = _recipe("fgsm_rs").attack(0.1, seed=7)
    start = (torch.rand(images.shape, generator=make_generator(7, images.device)) * 2 - 1) * 0.1
    start = (images + start).clamp(0, 1) - images
    step = 0.125 * _input_gradient(model, images + start, labels).sign()
    expected = (images + (start + step).clamp(-0.1, 0.1)).clamp(0, 1)
    assert torch.allclose(attack(model, images, labels), expected, atol=1e-6)


def test_multi_alternates_the_threat_models_by_batch() -> None:
    recipe = _recipe("multi", multi_other_eps=0.5)
    even, odd = recipe.attack(0.1, seed=1, batch=0), recipe.attack(0.1, seed=1, batch=1)
    assert (even.norm, even.eps) == ("Linf", 0.1)
    assert (odd.norm, odd.eps) == ("L2", 0.5)
    ramped = recipe.attack(0.05, seed=1, batch=3)
    assert ramped.eps == pytest.approx(0.25), "the other radius ramps with eps"


@pytest.mark.parametrize("method", ["trades", "alp"])
def test_recipe_loss_is_its_objective_on_the_crafted_examples(method: str) -> None:
    model = _linear()
    images = torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    recipe = _recipe(method, adv_weight=0.5, trades_beta=3.0, alp_weight=0.2)
    attack = recipe.attack(0.1, seed=3)
    loss, stats = recipe.loss(model, images, labels, attack)
    adversarial = attack(model, images, labels)
    assert (adversarial - images).abs().max() <= 0.1 + 1e-6
    clean_logits, adv_logits = model(images), model(adversarial)
    if method == "trades":
        expected = trades_objective(clean_logits, adv_logits, labels, 3.0)
        # The KL attack must move the prediction: the KL term is positive.
        assert (
            F.kl_div(F.log_softmax(adv_logits, 1), F.softmax(clean_logits, 1), reduction="sum") > 0
        )
    else:
        expected = alp_objective(clean_logits, adv_logits, labels, 0.5, 0.2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats.adv_loss is not None


def test_free_step_updates_weights_and_perturbation_from_one_backward() -> None:
    model = _linear()
    images = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 1, 2, 0])
    delta = torch.full_like(images, 0.02)
    delta = (images + delta).clamp(0, 1) - images
    weight_before = model.linear.weight.detach().clone()
    bias_before = model.linear.bias.detach().clone()
    input_grad = _input_gradient(model, images + delta, labels)
    probs = torch.softmax(model(images + delta), dim=1).detach()
    weight_grad = (probs - F.one_hot(labels, 3)).T @ (images + delta).flatten(1) / 4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    new_delta, _ = free_step(
        model,
        optimizer,
        images,
        labels,
        delta=delta,
        eps=0.1,
        recipe=_recipe("free", free_replays=1),
    )
    assert torch.allclose(model.linear.weight, weight_before - 0.5 * weight_grad, atol=1e-6)
    assert not torch.allclose(model.linear.bias, bias_before)
    expected_delta = (images + (delta + 0.1 * input_grad.sign()).clamp(-0.1, 0.1)).clamp(0, 1)
    assert torch.allclose(images + new_delta, expected_delta, atol=1e-6)


def test_catastrophic_overfitting_is_a_fall_of_validation_pgd_accuracy() -> None:
    def history(*accuracies: float) -> list[dict]:
        return [{"epoch": i + 1, "val_adv_accuracy": a} for i, a in enumerate(accuracies)]

    assert not catastrophic_overfitting(history(0.4))
    assert not catastrophic_overfitting(history(0.4, 0.45, 0.38))
    assert catastrophic_overfitting(history(0.4, 0.52, 0.05))
    assert not catastrophic_overfitting([{"epoch": 1}, {"epoch": 2}]), "natural training"


def test_select_epoch_takes_the_best_or_the_last_never_past_a_collapse() -> None:
    rows = [
        {"epoch": 1, "val_adv_accuracy": 0.3},
        {"epoch": 2, "val_adv_accuracy": 0.6},
        {"epoch": 3, "val_adv_accuracy": 0.6},
        {"epoch": 4, "val_adv_accuracy": 0.5},
        {"epoch": 5, "val_adv_accuracy": 0.1},
    ]
    assert select_epoch(rows, "best", None) == 3, "the latest of equal bests"
    assert select_epoch(rows, "last", None) == 5
    collapse = {"epoch": 5, "restored_epoch": 4}
    assert select_epoch(rows, "last", collapse) == 4
    assert select_epoch(rows, "best", collapse) == 3


def _fit(root: Path, recipe: Recipe, epochs: int, select: str = "best") -> dict:
    torch.manual_seed(0)
    optim = constant_lr(epochs)
    return fit(
        stage="train",
        model=build_model(SPEC),
        spec=SPEC,
        data=digits_split(),
        optim=optim,
        recipe=recipe,
        val_attack=PGD(eps=recipe.eps, steps=2, seed=1),
        layout=Layout(root),
        seed=3,
        run_key="key",
        device=torch.device("cpu"),
        select=select,
    )


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, accuracies: list[float]) -> None:
    """Fault injection: the validation PGD accuracy of each epoch, in order."""
    remaining = list(accuracies)

    def validation(model, split, attack, batch_size):
        return {
            "clean_loss": 1.0,
            "clean_accuracy": 0.9,
            "adv_loss": 2.0,
            "adv_accuracy": remaining.pop(0),
        }

    monkeypatch.setattr(iocane.training.validation, "evaluate_split", validation)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path)[0].state_dict()


def _epoch_weights(directory: Path, epoch: int) -> dict[str, torch.Tensor]:
    return torch.load(directory / f"epoch-{epoch:04d}.pt", weights_only=True)["model"]


def _same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(first[key], second[key]) for key in first)


def test_a_forced_collapse_restores_the_last_good_weights_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _scripted_validation(monkeypatch, [0.30, 0.45, 0.40, 0.02, 0.5, 0.5])
    with caplog.at_level("WARNING", logger="iocane"):
        result = _fit(tmp_path, _recipe("fgsm_rs"), epochs=6, select="last")
    assert "catastrophic overfitting at epoch 4" in caplog.text
    assert result["catastrophic_overfitting"]["epoch"] == 4
    assert result["selected_epoch"] == 3 and result["last_epoch"] == 4
    directory = Layout(tmp_path).checkpoint_dir("train")
    assert not (directory / "epoch-0005.pt").exists(), "training stopped at the collapse"
    assert _same(_weights(directory / "model.pt"), _epoch_weights(directory, 3))
    # A rerun resumes into the same decision instead of training on from the collapse.
    again = _fit(tmp_path, _recipe("fgsm_rs"), epochs=6, select="last")
    assert again["selected_epoch"] == 3 and not (directory / "epoch-0005.pt").exists()


def test_best_checkpoint_is_selected_and_both_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted_validation(monkeypatch, [0.30, 0.50, 0.45])
    result = _fit(tmp_path, _recipe("pgd", steps=1), epochs=3)
    assert (result["selected_epoch"], result["best_epoch"], result["last_epoch"]) == (2, 2, 3)
    directory = Layout(tmp_path).checkpoint_dir("train")
    assert _same(_weights(directory / "model.pt"), _epoch_weights(directory, 2))
    assert _same(_weights(directory / "best.pt"), _epoch_weights(directory, 2))
    assert _same(_weights(directory / "last.pt"), _epoch_weights(directory, 3))
    assert not _same(_epoch_weights(directory, 2), _epoch_weights(directory, 3))


@pytest.mark.parametrize("method", METHODS)
def test_every_recipe_trains_deterministically_under_a_seed(tmp_path: Path, method: str) -> None:
    recipe = _recipe(method, steps=2, adv_weight=0.5, free_replays=2)
    first = _fit(tmp_path / "a", recipe, epochs=1)
    second = _fit(tmp_path / "b", recipe, epochs=1)
    assert np.isfinite(first["train_clean_loss"]) and first["train_adv_loss"] is not None
    weights = [
        _weights(Layout(root).model_file("train")) for root in (tmp_path / "a", tmp_path / "b")
    ]
    assert _same(*weights)
    assert first["train_adv_loss"] == second["train_adv_loss"]


def test_a_non_finite_loss_stops_training_naming_epoch_and_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: a weight turns NaN before the 2nd step of epoch 2 (4 steps an epoch)."""
    real_step = iocane.training.epoch.train_step
    calls = []

    def poisoned_step(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")
        return real_step(model, *args, **kwargs)

    monkeypatch.setattr(iocane.training.epoch, "train_step", poisoned_step)
    with pytest.raises(TrainingDiverged, match=r"loss became non-finite at epoch 2, step 2"):
        _fit(tmp_path, _recipe("pgd"), epochs=3)
    directory = tmp_path / "checkpoints" / "train"
    assert sorted(path.name for path in directory.glob("epoch-*.pt")) == ["epoch-0001.pt"]
    assert torch.isfinite(_epoch_weights(directory, 1)["net.features.0.weight"]).all()
    assert not Layout(tmp_path).model_file("train").exists(), "no model for later stages"


def test_a_real_divergence_is_caught_in_its_first_epoch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    optim = OptimConfig(
        epochs=2, batch_size=32, lr=1e30, momentum=0.9, weight_decay=0.0, lr_schedule="constant"
    )
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step \d.*no epoch was kept"):
        fit(
            stage="warmup",
            model=build_model(SPEC),
            spec=SPEC,
            data=digits_split(),
            optim=optim,
            recipe=None,
            val_attack=None,
            layout=Layout(tmp_path),
            seed=0,
            run_key="key",
            device=torch.device("cpu"),
        )
    assert not list((tmp_path / "checkpoints" / "warmup").glob("*.pt"))


def _batch_norm_network(dropout: float) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(4 * 6 * 6, 3),
    ).train()


def test_the_reported_clean_pass_changes_neither_statistics_nor_random_state() -> None:
    """Pure Madry's clean pass is only reported: the batch-norm buffers and the random state
    after the step are what the adversarial pass alone leaves."""
    model, images, labels = _batch_norm_network(0.5), torch.rand(16, 1, 8, 8), torch.arange(16) % 3
    attack = PGD(eps=0.1, norm="Linf", steps=2, seed=0)
    twin = copy.deepcopy(model)
    torch.manual_seed(1)
    training_loss(model, images, labels, attack, adv_weight=1.0)
    after_step = torch.rand(1)

    torch.manual_seed(1)
    adversarial = attack(twin.eval(), images, labels)
    twin.train()(adversarial)  # the one pass that trains
    assert torch.equal(after_step, torch.rand(1))
    for mine, theirs in zip(model.buffers(), twin.buffers(), strict=True):
        assert torch.equal(mine, theirs)


def test_the_reported_clean_accuracy_is_measured_in_train_mode() -> None:
    """In train mode, as the adversarial figure beside it: a batch-norm network whose running
    statistics lag its weights is not judged by them."""
    model, images, labels = _batch_norm_network(0.0), torch.rand(16, 1, 8, 8), torch.arange(16) % 3
    with torch.no_grad():
        model.get_submodule("1").running_mean.fill_(5.0)  # statistics far from the data
        expected = (copy.deepcopy(model).train()(images).argmax(1) == labels).sum()
        in_eval_mode = (copy.deepcopy(model).eval()(images).argmax(1) == labels).sum()
    assert expected != in_eval_mode  # the two modes disagree here, so the test can tell
    attack = PGD(eps=0.1, norm="Linf", steps=2, seed=0)
    _, stats = training_loss(model, images, labels, attack, adv_weight=1.0)
    assert stats.clean_correct == expected
