"""Checkpoints: every epoch is saved whole, a run resumes exactly, and unsafe files are refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits

from iocane.config import OptimConfig
from iocane.layout import Layout
from iocane.modelio import ModelFileError, load_model, save_model
from models import ModelSpec, build_model
from tasks.data import PreparedData, Split
from tasks.recipes import AdversarialRecipe
from tasks.train import fit

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=8)
OPTIM = OptimConfig(
    epochs=3, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5.0e-4, lr_schedule="cosine"
)
RECIPE = AdversarialRecipe(
    norm="Linf",
    eps=0.1,
    step_size=0.05,
    steps=2,
    random_start=True,
    adv_weight=0.5,
    eps_ramp_epochs=1,
)


def _data() -> PreparedData:
    digits = load_digits()
    images = torch.tensor(digits.images[:300] / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target[:300])
    split = Split(images[:240], labels[:240])
    held_out = Split(images[240:], labels[240:])
    return PreparedData(split, held_out, held_out, meta={})


def _fit(root: Path, run_key: str = "key") -> dict:
    torch.manual_seed(0)
    return fit(
        stage="train",
        model=build_model(SPEC),
        spec=SPEC,
        data=_data(),
        optim=OPTIM,
        recipe=RECIPE,
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
