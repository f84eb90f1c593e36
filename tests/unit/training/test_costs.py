"""What hardening cost: the passes counted during training match the recipe's arithmetic, and
the summary turns the stages' figures into hours, overhead, price and robustness per hour."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits

from iocane.base.config import OptimConfig
from iocane.base.files import write_json
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData, Split
from iocane.reports.costs import cost_summary
from iocane.training.loop import fit
from iocane.training.passes import counting_passes
from iocane.training.recipes import Recipe
from models import ModelSpec, build_model
from tests.helpers.tiny_training import adversarial_recipe

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=8)
EPOCHS, BATCHES, STEPS = 2, 4, 3  # 240 training images in batches of 64: 4 batches per epoch
OPTIM = OptimConfig(
    epochs=EPOCHS, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, lr_schedule="constant"
)
PGD = adversarial_recipe(
    norm="Linf",
    eps=0.1,
    step_size=0.05,
    steps=STEPS,
    random_start=True,
    adv_weight=1.0,
    eps_ramp_epochs=0,
)


def _fit(root: Path, recipe: Recipe | None) -> dict:
    digits = load_digits()
    images = torch.tensor(digits.images[:300] / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target[:300])
    held_out = Split(images[240:], labels[240:])
    torch.manual_seed(0)
    return fit(
        stage="train",
        model=build_model(SPEC),
        spec=SPEC,
        data=PreparedData(Split(images[:240], labels[:240]), held_out, held_out, meta={}),
        optim=OPTIM,
        recipe=recipe,
        val_attack=None,
        layout=Layout(root),
        seed=1,
        run_key="costs",
        device=torch.device("cpu"),
    )


@pytest.mark.parametrize(
    ("recipe", "forward", "backward"),
    [
        # natural: one pass each way per batch
        (None, 1, 1),
        # pure Madry: the attack's steps, then the loss pass: steps + 1 backward passes; and one
        # forward pass more, the clean pass that is only reported (no gradient)
        (PGD, STEPS + 2, STEPS + 1),
        # the 50/50 mix trains on both passes: both go back
        (dataclasses.replace(PGD, adv_weight=0.5), STEPS + 2, STEPS + 2),
    ],
    ids=["natural", "pgd", "pgd-mix"],
)
def test_training_passes_per_batch_match_the_recipe(
    tmp_path: Path, recipe: Recipe | None, forward: int, backward: int
) -> None:
    metrics = _fit(tmp_path, recipe)
    steps = EPOCHS * BATCHES
    assert metrics["training_forward_passes"] == steps * forward
    assert metrics["training_backward_passes"] == steps * backward
    assert metrics["training_backward_images"] == EPOCHS * 240 * backward
    assert metrics["images_trained"] == EPOCHS * 240
    # validation: one clean pass over the 60 held-out images per epoch, no gradient
    assert metrics["validation_forward_passes"] == EPOCHS
    assert metrics.get("validation_backward_passes", 0) == 0
    assert metrics["forward_passes"] == steps * forward + EPOCHS


def test_counting_adds_no_passes_and_stops_with_its_block() -> None:
    model = torch.nn.Linear(4, 2)
    with counting_passes(model) as count:
        model(torch.ones(3, 4)).sum().backward()
        with torch.no_grad():
            model(torch.ones(5, 4))
    model(torch.ones(2, 4)).sum().backward()  # outside the block: not counted
    figures = {key: int(value) for key, value in count.totals().items()}
    assert figures["forward_passes"] == 2 and figures["backward_passes"] == 1
    assert figures["forward_images"] == 8 and figures["backward_images"] == 3


def test_cost_summary_hours_overhead_price_and_gain_per_hour(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    write_json(
        layout.metrics_file("warmup"),
        {"seconds": 10.0, "images_trained": 1000, "forward_images": 1000, "backward_images": 1000},
    )
    write_json(
        layout.metrics_file("train"),
        {"seconds": 110.0, "images_trained": 1000, "forward_images": 5000, "backward_images": 4000},
    )
    write_json(layout.metrics_file("evaluate"), {"seconds": 60.0})
    evaluation = {"robust_accuracy": 0.8, "natural": {"robust_accuracy": 0.1}}
    summary = cost_summary(layout, 2.0, evaluation)
    assert summary["hours"] == pytest.approx(180 / 3600)
    assert summary["train_hours"] == pytest.approx(110 / 3600)
    assert summary["overhead_time_ratio"] == pytest.approx(11.0)  # per training image
    assert summary["overhead_pass_ratio"] == pytest.approx(4.5)  # 9 passes per image against 2
    assert summary["price"] == pytest.approx(0.1)
    assert summary["robust_gain"] == pytest.approx(0.7)
    assert summary["robust_gain_per_hour"] == pytest.approx(14.0)
    assert cost_summary(layout, None)["price"] is None
