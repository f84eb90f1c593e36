"""Checkpoints: every epoch is saved whole, a run resumes exactly, and unsafe files are refused."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits

from iocane.base.config import OptimConfig
from iocane.base.errors import ModelFileError
from iocane.base.interrupts import Interrupted
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData, Split
from iocane.model_files import load_model, save_model
from iocane.training.checkpoints import PARTIAL_CHECKPOINT
from iocane.training.loop import fit
from iocane.training.recipes import Recipe
from models import ModelSpec, build_model
from tests.helpers.tiny_training import adversarial_recipe

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=8)
OPTIM = OptimConfig(
    epochs=3, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5.0e-4, lr_schedule="cosine"
)
RECIPE_FIELDS = {
    "norm": "Linf",
    "eps": 0.1,
    "step_size": 0.05,
    "steps": 2,
    "random_start": True,
    "adv_weight": 0.5,
    "eps_ramp_epochs": 1,
}
RECIPE = adversarial_recipe(**RECIPE_FIELDS)


def _data() -> PreparedData:
    digits = load_digits()
    images = torch.tensor(digits.images[:300] / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target[:300])
    split = Split(images[:240], labels[:240])
    held_out = Split(images[240:], labels[240:])
    return PreparedData(split, held_out, held_out, meta={})


def _fit(
    root: Path,
    run_key: str = "key",
    recipe: Recipe = RECIPE,
    signal_at_forward: int | None = None,
    optim: OptimConfig = OPTIM,
) -> dict:
    """``signal_at_forward``: the process sends itself SIGTERM during that forward pass."""
    torch.manual_seed(0)
    model = build_model(SPEC)
    if signal_at_forward is not None:
        calls = iter(range(1, 10**9))

        def send_sigterm(*_: object) -> None:
            if next(calls) == signal_at_forward:
                os.kill(os.getpid(), signal.SIGTERM)

        model.register_forward_hook(send_sigterm)
    return fit(
        stage="train",
        model=model,
        spec=SPEC,
        data=_data(),
        optim=optim,
        recipe=recipe,
        val_attack=None,
        layout=Layout(root),
        seed=5,
        run_key=run_key,
        device=torch.device("cpu"),
    )


def test_each_epoch_checkpoint_holds_the_whole_training_state(tmp_path: Path) -> None:
    _fit(tmp_path)
    directory = Layout(tmp_path).checkpoint_dir("train")
    assert sorted(path.name for path in directory.glob("epoch-*.pt")) == [
        "epoch-0001.pt",
        "epoch-0002.pt",
        "epoch-0003.pt",
    ]
    checkpoint = torch.load(directory / "epoch-0002.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert checkpoint["optimizer"]["state"], "momentum buffers must be saved"
    assert checkpoint["scheduler"]["last_epoch"] == 2
    assert {"shuffle", "torch"} <= set(checkpoint["rng"])
    assert len(checkpoint["history"]) == 2


def test_resume_after_a_lost_epoch_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    uninterrupted = _fit(tmp_path / "a")
    reference = torch.load(Layout(tmp_path / "a").model_file("train"), weights_only=True)

    interrupted = Layout(tmp_path / "b")
    _fit(interrupted.root)
    # As if the process died during epoch 3: its checkpoint and the final model never landed.
    (interrupted.checkpoint_dir("train") / "epoch-0003.pt").unlink()
    interrupted.model_file("train").unlink()
    resumed = _fit(interrupted.root)

    assert resumed["resumed_after_epoch"] == 2
    assert resumed["val_clean_accuracy"] == uninterrupted["val_clean_accuracy"]
    weights = torch.load(interrupted.model_file("train"), weights_only=True)["state_dict"]
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(tensor, weights[name]), name


def _history_without_times(layout: Layout) -> list[dict]:
    rows = torch.load(layout.checkpoint_dir("train") / "epoch-0003.pt", weights_only=True)
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows["history"]]


@pytest.mark.parametrize(
    ("method", "forward", "schedule"),
    [("pgd", 24, "cosine"), ("free", 18, "cosine"), ("pgd", 24, "onecycle")],
)
def test_sigterm_within_an_epoch_saves_that_step_and_the_rerun_finishes_identically(
    tmp_path: Path, method: str, forward: int, schedule: str
) -> None:
    """The signal lands within epoch 2 (free keeps a perturbation across steps, so
    it must be saved too; onecycle's schedule moves every step, so its position within the
    epoch must be saved too); the rerun resumes at the next step and ends bit-identical."""
    recipe = adversarial_recipe(method, **{**RECIPE_FIELDS, "free_replays": 2})
    optim = OPTIM.model_copy(update={"lr_schedule": schedule})
    uninterrupted = _fit(tmp_path / "a", recipe=recipe, optim=optim)
    reference = torch.load(Layout(tmp_path / "a").model_file("train"), weights_only=True)

    stopped = Layout(tmp_path / "b")
    with pytest.raises(Interrupted, match=r"SIGTERM in epoch 2 after step [123] of 4") as raised:
        _fit(stopped.root, recipe=recipe, signal_at_forward=forward, optim=optim)
    assert raised.value.exit_code == 128 + signal.SIGTERM
    directory = stopped.checkpoint_dir("train")
    partial = torch.load(directory / PARTIAL_CHECKPOINT, weights_only=True)
    assert partial["epoch"] == 1 and partial["position"]["batch"] in (1, 2, 3)
    assert not stopped.model_file("train").exists(), "an interrupted stage writes no model"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler is restored"

    resumed = _fit(stopped.root, recipe=recipe, optim=optim)
    assert (resumed["resumed_after_epoch"], resumed["resumed_after_step"]) == (
        1,
        partial["position"]["batch"],
    )
    assert not (directory / PARTIAL_CHECKPOINT).exists()
    assert resumed["val_clean_accuracy"] == uninterrupted["val_clean_accuracy"]
    assert _history_without_times(stopped) == _history_without_times(Layout(tmp_path / "a"))
    weights = torch.load(stopped.model_file("train"), weights_only=True)["state_dict"]
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(tensor, weights[name]), name


def test_a_partial_checkpoint_of_another_run_is_removed(tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        _fit(tmp_path, signal_at_forward=5)
    result = _fit(tmp_path, run_key="other")
    assert result["resumed_after_epoch"] is None
    assert not (Layout(tmp_path).checkpoint_dir("train") / PARTIAL_CHECKPOINT).exists()


def test_checkpoints_of_another_run_are_not_resumed(tmp_path: Path) -> None:
    _fit(tmp_path)
    result = _fit(tmp_path, run_key="other")
    assert result["resumed_after_epoch"] is None


class _Payload:
    def __reduce__(self):  # what a malicious "checkpoint" does: run code on unpickling
        return (Path("/tmp/iocane-pwned").touch, ())


def test_a_pickled_payload_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"spec": SPEC.to_dict(), "state_dict": _Payload()}, path, pickle_module=pickle)
    Path("/tmp/iocane-pwned").unlink(missing_ok=True)
    with pytest.raises(ModelFileError, match="cannot be loaded safely"):
        load_model(path)
    assert not Path("/tmp/iocane-pwned").exists()


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_model(path, build_model(SPEC), SPEC)
    payload = torch.load(path, weights_only=True)
    payload["spec"]["name"] = "madry_cnn"
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="does not fit architecture madry_cnn"):
        load_model(path)
