"""A run that is not learning stops after its first judged epoch with one line naming the likely
cause: in the training loop, and through the DVC stage command (exit 1, no traceback, no model)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from iocane.base.config import OptimConfig, load_config
from iocane.base.errors import OTHER_ERROR, NotLearning
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData, Split, prepare_data
from iocane.training.chance import (
    MIN_STEPS,
    at_chance,
    chance_accuracy,
    check_learning,
    judged_epoch,
)
from iocane.training.loop import fit
from models import ModelSpec, build_model
from tests.helpers.pipeline_params import write_tiny_params

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=4)

# A user's model whose output ignores its input: it can learn the class frequencies, no more.
BLIND_MODELS = """
import torch
from torch import nn


class Blind(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, images):
        # the input stays in the graph (zero weight), so gradients to it exist
        return self.bias.expand(len(images), -1) + 0 * images.flatten(1).sum(1, keepdim=True)


def blind_net(channels, image_size, num_classes):
    return Blind(num_classes)
"""
namespace: dict = {}
exec(BLIND_MODELS, namespace)
blind_net = namespace["blind_net"]


def _data(n_train: int = 1000) -> PreparedData:
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target)
    held_out = Split(images[1500:1700], labels[1500:1700])
    return PreparedData(Split(images[:n_train], labels[:n_train]), held_out, held_out, meta={})


def _fit(root: Path, model: nn.Module, epochs: int = 2, n_train: int = 1000) -> dict:
    optim = OptimConfig(
        epochs=epochs, batch_size=16, lr=0.05, momentum=0.9, weight_decay=0.0,
        lr_schedule="constant",
    )  # fmt: skip
    return fit(
        stage="warmup",
        model=model,
        spec=SPEC,
        data=_data(n_train),
        optim=optim,
        recipe=None,
        val_attack=None,
        layout=Layout(root),
        seed=0,
        run_key="key",
        device=torch.device("cpu"),
    )


def test_chance_is_the_most_common_class_within_three_standard_errors() -> None:
    assert chance_accuracy(torch.tensor([0, 1, 2, 3])) == 0.25
    assert chance_accuracy(torch.tensor([0, 0, 0, 1])) == 0.75  # imbalanced: answer 0
    # 10 classes on 10,000 images: 0.1 + 3 * 0.003
    assert at_chance(0.108, 0.1, 10_000) and not at_chance(0.11, 0.1, 10_000)
    # on 100 images the same accuracy cannot be told from chance
    assert at_chance(0.18, 0.1, 100) and not at_chance(0.2, 0.1, 100)


def test_a_run_is_judged_once_after_enough_steps_and_never_when_shorter() -> None:
    assert judged_epoch(n_batches=843, epochs=12) == 0  # Fashion-MNIST: the first epoch
    assert judged_epoch(n_batches=MIN_STEPS, epochs=1) == 0
    assert judged_epoch(n_batches=21, epochs=5) == 2  # digits: the epoch by which 50 steps ran
    assert judged_epoch(n_batches=9, epochs=2) is None  # the tiny end-to-end runs


def _row(train: float, val: float, adv: float | None = None) -> dict:
    return {"train_clean_accuracy": train, "val_clean_accuracy": val, "train_adv_accuracy": adv}


def _check(row: dict, stage: str = "warmup", eps: float | None = None) -> None:
    labels = torch.arange(1000) % 10
    check_learning(
        stage=stage,
        epoch=0,
        row=row,
        images_trained=1000,
        train_labels=labels,
        val_labels=labels[:200],
        num_classes=10,
        lr=0.05,
        eps=eps,
    )


def test_only_clean_accuracy_at_chance_on_both_splits_stops_a_run() -> None:
    with pytest.raises(NotLearning) as raised:
        _check(_row(0.101, 0.095))
    assert str(raised.value) == (
        "warmup: not learning: training accuracy 0.101 after epoch 1 is chance for 10 classes "
        "(validation 0.095); the learning rate (warmup.lr 0.05) may be too high (or too low) "
        "for this model, or the model cannot fit the data"
    )
    with pytest.raises(NotLearning, match=r"train\.eps \(0\.3\) too large"):
        _check(_row(0.1, 0.1, adv=0.0), stage="train", eps=0.3)
    # Adversarial training: accuracy on the adversarial examples may be at chance, clean not.
    _check(_row(0.62, 0.60, adv=0.05), stage="train", eps=0.3)
    # The epoch's average still remembers its first steps; the model after it has learnt.
    _check(_row(0.12, 0.45))
    # A model from weights that already classify is far above chance.
    _check(_row(0.93, 0.91))


def test_a_model_that_cannot_learn_stops_after_its_first_epoch(tmp_path: Path) -> None:
    # 63 steps an epoch: judged after the first
    with pytest.raises(NotLearning, match=r"^warmup: not learning: .* after epoch 1 is chance"):
        _fit(tmp_path, blind_net(1, 8, 10))
    layout = Layout(tmp_path)
    assert not list(layout.checkpoint_dir("warmup").glob("*.pt")), "the epoch is not kept"
    assert not layout.model_file("warmup").exists()
    assert not layout.metrics_file("warmup").exists()


def test_a_model_that_learns_is_not_stopped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = _fit(tmp_path, build_model(SPEC), epochs=1)
    assert result["train_clean_accuracy"] > 0.3


def test_a_run_too_short_to_judge_is_not_stopped(tmp_path: Path) -> None:
    # 2 epochs of 13 steps: below MIN_STEPS; the blind model trains on (the gate will judge it)
    result = _fit(tmp_path, blind_net(1, 8, 10), n_train=200)
    assert result["last_epoch"] == 2


def test_the_warmup_stage_command_exits_1_with_one_line(tmp_path: Path) -> None:
    """``python -m iocane.stages warmup``, as ``dvc repro`` runs it."""
    (tmp_path / "blind_models.py").write_text(textwrap.dedent(BLIND_MODELS))
    params = write_tiny_params(
        tmp_path / "params.yaml",
        model={"name": "blind_models:blind_net"},
        warmup={"batch_size": 8},  # 540 images: 68 steps, judged after the first epoch
    )
    layout = Layout(tmp_path)
    prepare_data(load_config(str(params)), layout)
    result = subprocess.run(
        [sys.executable, "-m", "iocane.stages", "warmup"],
        cwd=tmp_path,
        env={**os.environ, "IOCANE_DATA_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == OTHER_ERROR, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: warmup: not learning: training accuracy "), line
    assert "after epoch 1 is chance for 10 classes" in line and "warmup.lr 0.05" in line, line
    assert not layout.model_file("warmup").exists()
    assert not list(layout.checkpoint_dir("warmup").glob("*.pt"))


def test_under_ddp_the_launcher_raises_the_ranks_not_learning(tmp_path: Path) -> None:
    """Every rank sees the same summed figures and stops; the stage reports rank 0's line."""
    from iocane.base.files import write_json
    from iocane.training.launcher import _failure, _result_file

    layout = Layout(tmp_path)
    message = "train: not learning: training accuracy 0.100 after epoch 1 is chance"
    for rank in range(2):
        _result_file(layout, rank).parent.mkdir(parents=True, exist_ok=True)
        write_json(
            _result_file(layout, rank),
            {"rank": rank, "error": message, "kind": "NotLearning", "signal": None, "time": rank},
        )
    failure = _failure(layout, nproc=2, returncode=1, forwarded=None)
    assert isinstance(failure, NotLearning) and str(failure) == message
