"""Safe loading: no model file or training checkpoint runs pickled code when it is read.

Every malicious file below carries a live payload: unpickled by a plain ``torch.load`` (no
``weights_only``) it creates a marker file, which each test checks first so that it cannot pass
vacuously. The loaders must then refuse (model files) or skip (checkpoints) the file, and the
marker must never appear.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits

from iocane.base.config import OptimConfig
from iocane.base.errors import ModelFileError
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData, Split
from iocane.model_files import load_model, save_model
from iocane.training.checkpoints import take_resumable
from iocane.training.loop import fit
from models import ModelSpec, build_model

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=8)


class Trap:
    """What a malicious checkpoint holds: unpickling it calls ``Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _assert_payload_is_live(path: Path, marker: Path) -> None:
    """The control: an unsafe ``torch.load`` of ``path`` does run the payload."""
    assert not marker.exists()
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists(), "the payload never ran: this test would prove nothing"
    marker.unlink()


def _refusal(path: Path, marker: Path) -> str:
    """``load_model``'s error for ``path``; the payload must not have run, whatever happened."""
    try:
        load_model(path)
    except Exception as error:  # checked by the caller: it must be a ModelFileError
        message = f"{type(error).__name__}: {error}"
    else:
        message = "(loaded without an error)"
    assert not marker.exists(), f"loading {path} ran the pickled payload"
    return message


def _real_model_payload(tmp_path: Path) -> dict:
    """The dict ``save_model`` writes for a real model: {"spec": {...}, "state_dict": {...}}."""
    reference = tmp_path / "reference.pt"
    save_model(reference, build_model(SPEC), SPEC)
    payload = torch.load(reference, weights_only=True)
    assert set(payload) == {"spec", "state_dict"}
    return payload


def _inject_in_tensor(payload: dict, trap: Trap) -> None:
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = trap


def _inject_extra_weight(payload: dict, trap: Trap) -> None:
    payload["state_dict"]["smuggled.weight"] = trap


def _inject_in_spec(payload: dict, trap: Trap) -> None:
    payload["spec"]["name"] = trap


def _inject_top_level(payload: dict, trap: Trap) -> None:
    payload["metadata"] = trap


@pytest.mark.parametrize(
    "inject",
    [_inject_in_tensor, _inject_extra_weight, _inject_in_spec, _inject_top_level],
    ids=["replaces-a-tensor", "extra-weight", "in-spec", "top-level"],
)
@pytest.mark.parametrize("zipfile", [True, False], ids=["zip-format", "legacy-format"])
def test_a_malicious_model_file_is_refused_without_running_code(
    tmp_path: Path, inject, zipfile: bool
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoints" / "train" / "model.pt"
    path.parent.mkdir(parents=True)
    payload = _real_model_payload(tmp_path)
    inject(payload, Trap(marker))
    torch.save(payload, path, _use_new_zipfile_serialization=zipfile)
    _assert_payload_is_live(path, marker)

    message = _refusal(path, marker)
    assert message.startswith("ModelFileError: "), message
    assert "cannot be loaded safely" in message and str(path) in message, message


def test_weights_only_cannot_be_switched_off_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch honours TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD only where weights_only was not passed.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    payload = _real_model_payload(tmp_path)
    _inject_in_tensor(payload, Trap(marker))
    torch.save(payload, path)
    _assert_payload_is_live(path, marker)

    message = _refusal(path, marker)
    assert message.startswith("ModelFileError: "), message
    assert "cannot be loaded safely" in message and str(path) in message, message


def test_a_pickled_whole_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    model = build_model(SPEC)
    torch.save(model, path)  # the whole nn.Module pickled, not a state_dict
    assert isinstance(torch.load(path, weights_only=False), torch.nn.Module)

    with pytest.raises(ModelFileError) as refused:
        load_model(path)
    message = str(refused.value)
    assert str(path) in message and "cannot be loaded safely" in message
    # torch's reason names the class that the file wanted to import.
    assert type(model).__name__ in message


def test_a_bare_state_dict_is_not_an_iocane_model(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(build_model(SPEC).state_dict(), path)
    with pytest.raises(ModelFileError, match=r"is not an iocane model \(no spec/state_dict\)"):
        load_model(path)


# Training checkpoints: iocane.training.checkpoints.take_resumable reads every epoch-*.pt on resume.


@pytest.fixture
def iocane_log(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    # The CLI's console setup turns propagation off; caplog listens on the root logger.
    monkeypatch.setattr(logging.getLogger("iocane"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="iocane")
    return caplog


def test_a_malicious_checkpoint_is_skipped_and_removed_on_resume(
    tmp_path: Path, iocane_log: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    directory = tmp_path / "checkpoints" / "train"
    directory.mkdir(parents=True)
    torch.save({"run_key": "key", "epoch": 1, "model": {}}, directory / "epoch-0001.pt")
    malicious = directory / "epoch-0002.pt"
    # The newest checkpoint, and of this very run: the one a resume would pick.
    torch.save({"run_key": "key", "epoch": 2, "model": {"weight": Trap(marker)}}, malicious)
    _assert_payload_is_live(malicious, marker)

    resumed = take_resumable(directory, "key")

    assert not marker.exists()
    assert resumed is not None and resumed["epoch"] == 1
    assert not malicious.exists(), "an unreadable checkpoint is deleted"
    assert any(
        "removing unreadable checkpoint" in record.getMessage()
        and str(malicious) in record.getMessage()
        for record in iocane_log.records
    )


def _digits() -> PreparedData:
    digits = load_digits()
    images = torch.tensor(digits.images[:300] / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target[:300])
    held_out = Split(images[240:], labels[240:])
    return PreparedData(Split(images[:240], labels[:240]), held_out, held_out, meta={})


def _fit(layout: Layout) -> dict:
    torch.manual_seed(0)
    return fit(
        stage="train",
        model=build_model(SPEC),
        spec=SPEC,
        data=_digits(),
        optim=OptimConfig(
            epochs=2,
            batch_size=64,
            lr=0.05,
            momentum=0.9,
            weight_decay=5.0e-4,
            lr_schedule="cosine",
        ),
        recipe=None,  # natural training: the resume logic is the same, and it is quick
        val_attack=None,
        layout=layout,
        seed=5,
        run_key="key",
        device=torch.device("cpu"),
    )


def test_training_resumes_past_a_malicious_checkpoint(
    tmp_path: Path, iocane_log: pytest.LogCaptureFixture
) -> None:
    layout = Layout(tmp_path)
    marker = tmp_path / "pwned"
    _fit(layout)
    reference = torch.load(layout.model_file("train"), weights_only=True)["state_dict"]

    # The real last checkpoint of this run, with a payload slipped into its optimiser state.
    newest = layout.checkpoint_dir("train") / "epoch-0002.pt"
    checkpoint = torch.load(newest, weights_only=True)
    checkpoint["optimizer"]["state"][0]["momentum_buffer"] = Trap(marker)
    torch.save(checkpoint, newest)
    _assert_payload_is_live(newest, marker)
    layout.model_file("train").unlink()

    result = _fit(layout)

    assert not marker.exists()
    assert result["resumed_after_epoch"] == 1, "resumes from the last safe checkpoint"
    assert any(str(newest) in record.getMessage() for record in iocane_log.records)
    # Epoch 2 was trained again, exactly as before, and written as a clean checkpoint.
    assert torch.load(newest, weights_only=True)["epoch"] == 2
    weights = torch.load(layout.model_file("train"), weights_only=True)["state_dict"]
    for name, tensor in reference.items():
        assert torch.equal(tensor, weights[name]), name
