"""Checkpoint retention (``<stage>.keep_checkpoints``): by default only the newest epoch checkpoint
and those the selection reads stay; the model, ``best.pt``, ``last.pt`` and the metrics are those
of a run that kept every epoch, and a run that fails mid-way resumes from the kept newest one to
the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import iocane.training.loop as loop_module
from iocane.base.config import OptimConfig
from iocane.base.layout import Layout
from iocane.training.checkpoints import trained_params
from iocane.training.selection import epochs_read
from models import ModelSpec
from tests.helpers.tiny_training import adversarial_recipe, fit_held_out

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=8)
# Validation PGD accuracy peaks at epoch 5 of 6 here, without a collapse (checked below): the best
# is not the newest. (Batches of 64 had that shape under the seeds before iocane.training.seeds.)
OPTIM = OptimConfig(
    epochs=6, batch_size=48, lr=0.05, momentum=0.9, weight_decay=5.0e-4, lr_schedule="cosine"
)
RECIPE = adversarial_recipe(
    norm="Linf", eps=0.1, step_size=0.05, steps=2, random_start=True, adv_weight=0.5,
    eps_ramp_epochs=1,
)  # fmt: skip


def _fit(root: Path, keep: str) -> dict:
    return fit_held_out(root, SPEC, OPTIM, RECIPE, select="best", keep_checkpoints=keep)


def _epoch_files(root: Path) -> list[str]:
    return sorted(path.name for path in Layout(root).checkpoint_dir("train").glob("epoch-*.pt"))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _assert_same_weights(path: Path, reference: Path) -> None:
    expected = _weights(reference)
    for name, tensor in _weights(path).items():
        assert torch.equal(tensor, expected[name]), name


def _without_times(metrics: dict) -> dict:
    """The metrics a resume leaves as they were: not times, nor this process's own counts."""
    own = ("seconds", "passes", "images", "resumed_after")
    return {k: v for k, v in metrics.items() if not any(word in k for word in own)}


@pytest.fixture(scope="module")
def every_epoch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("all")
    return root, _fit(root, "all")


def test_the_default_keeps_the_newest_and_the_best_and_selects_the_same(
    every_epoch: tuple[Path, dict], tmp_path: Path
) -> None:
    reference, expected = every_epoch
    assert _epoch_files(reference) == [f"epoch-{e:04d}.pt" for e in range(1, 7)]
    assert expected["best_epoch"] < expected["last_epoch"] == 6, "the best must not be the newest"

    metrics = _fit(tmp_path, "newest_and_best")
    assert _epoch_files(tmp_path) == [
        f"epoch-{expected['best_epoch']:04d}.pt",
        "epoch-0006.pt",
    ]
    assert _without_times(metrics) == _without_times(expected)
    directory, reference_directory = (
        Layout(p).checkpoint_dir("train") for p in (tmp_path, reference)
    )
    for name in ("best.pt", "last.pt"):
        _assert_same_weights(directory / name, reference_directory / name)
    _assert_same_weights(
        Layout(tmp_path).model_file("train"), Layout(reference).model_file("train")
    )


def test_a_failed_write_leaves_the_kept_newest_and_the_rerun_ends_the_same(
    every_epoch: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epoch 5's checkpoint cannot be written (a full disk): the checkpoints kept after epoch 4
    (its own and the best so far) are untouched, and the rerun resumes from epoch 4 to the
    weights of the run that kept every epoch."""
    reference, expected = every_epoch
    save = loop_module.save_epoch

    def full_disk_at_epoch_5(directory: Path, checkpoint: dict) -> None:
        if checkpoint["epoch"] == 5:
            raise OSError("injected: no space left on device")
        save(directory, checkpoint)

    monkeypatch.setattr(loop_module, "save_epoch", full_disk_at_epoch_5)
    with pytest.raises(OSError, match="no space left"):
        _fit(tmp_path, "newest_and_best")
    best_so_far = max(
        _expected_history(reference)[:4],
        key=lambda row: (row["val_adv_accuracy"], row["epoch"]),
    )["epoch"]
    assert _epoch_files(tmp_path) == sorted({f"epoch-{e:04d}.pt" for e in (best_so_far, 4)})

    monkeypatch.setattr(loop_module, "save_epoch", save)
    resumed = _fit(tmp_path, "newest_and_best")
    assert resumed["resumed_after_epoch"] == 4
    assert _without_times(resumed) == _without_times(expected)
    _assert_same_weights(
        Layout(tmp_path).model_file("train"), Layout(reference).model_file("train")
    )


def _expected_history(root: Path) -> list[dict]:
    newest = Layout(root).checkpoint_dir("train") / "epoch-0006.pt"
    return torch.load(newest, weights_only=True)["history"]


def test_after_a_collapse_the_epoch_before_it_is_kept() -> None:
    """``select: last`` with a collapse at epoch 4 reads epoch 3 (the last before the collapse)
    and the best before it; the collapsed epoch 4 is the newest."""
    history = [
        {"epoch": e, "val_adv_accuracy": a} for e, a in ((1, 0.3), (2, 0.5), (3, 0.45), (4, 0.0))
    ]
    collapse = {"epoch": 4, "restored_epoch": 3}
    assert epochs_read(history, "last", collapse) == {3, 2, 4}
    assert epochs_read(history, "best", collapse) == {2, 4}
    assert epochs_read(history[:3], "best", None) == {2, 3}


def test_changing_what_is_kept_does_not_change_the_run_key() -> None:
    section = {"epochs": 3, "keep_checkpoints": "all"}
    assert trained_params(section) == {"epochs": 3}
    assert trained_params({**section, "keep_checkpoints": "newest_and_best"}) == {"epochs": 3}
