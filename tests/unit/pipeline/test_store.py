"""The stage store: a run's outputs stored by content come back byte for byte, with its result;
a corrupt or missing entry restores nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from iocane.base.config import load_config
from iocane.base.files import write_json
from iocane.base.layout import Layout
from iocane.pipeline.keys import stage_key
from iocane.pipeline.store import outputs_current, restore_run, save_run, stored_result
from tests.helpers.pipeline_params import write_tiny_params
from tests.unit.pipeline.test_caching import write_stage_files

TRAIN_OUTPUTS = ("checkpoints/train/model.pt", "metrics/train.json", "plots/train.csv")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    write_stage_files(tmp_path)
    return Layout(tmp_path)


def _contents(layout: Layout) -> dict[str, bytes]:
    return {name: (layout.root / name).read_bytes() for name in TRAIN_OUTPUTS}


def _train_again(layout: Layout, label: str) -> None:
    """What a run with other params leaves at the train stage's paths (written by rename)."""
    for name in TRAIN_OUTPUTS:
        path = layout.root / name
        temp = path.with_name(".new.tmp")
        temp.write_text(f"{name} trained with {label}")
        temp.replace(path)


@pytest.fixture
def stored(layout: Layout, tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    """The train stage ran under the tiny params' key and was stored; then another run
    (``train.eps=0.05``) replaced its files."""
    config = load_config(write_tiny_params(tmp_path / "params.yaml"))
    key = stage_key("train", config, layout)
    assert not outputs_current("train", key, layout), "nothing stored yet"
    assert save_run("train", key, layout, {"path": "checkpoints/train/model.pt", "sha256": "ab"})
    assert outputs_current("train", key, layout)
    original = _contents(layout)
    _train_again(layout, "eps 0.05")
    assert not outputs_current("train", key, layout)
    return key, original


def test_a_stored_run_is_restored_byte_for_byte_with_its_result(layout, stored) -> None:
    key, original = stored
    assert restore_run("train", key, layout)
    assert _contents(layout) == original
    assert outputs_current("train", key, layout)
    assert stored_result("train", key, layout) == (
        True,
        {"path": "checkpoints/train/model.pt", "sha256": "ab"},
    )
    # The per-epoch checkpoint is resume state, not an output: it is left alone.
    assert (layout.root / "checkpoints/train/epoch-0001.pt").exists()


def test_a_directory_output_is_restored_without_files_the_run_did_not_write(layout, stored) -> None:
    key, _ = stored
    extra = layout.root / "checkpoints/train/best.pt"
    extra.write_text("written by the other run")
    assert not outputs_current("train", key, layout), "a new file in the directory is a change"
    assert restore_run("train", key, layout)
    assert not extra.exists()
    assert outputs_current("train", key, layout)


def test_an_unknown_key_restores_nothing(layout, stored) -> None:
    _, original = stored
    before = _contents(layout)
    assert not restore_run("train", "0" * 64, layout)
    assert _contents(layout) == before != original


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_damaged_store_entry_restores_nothing(layout, stored, damage: str) -> None:
    key, _ = stored
    before = _contents(layout)
    blobs = sorted((layout.stage_cache_dir / "files").iterdir())
    assert len(blobs) == len(TRAIN_OUTPUTS), "the per-epoch checkpoint is not stored"
    target = blobs[0]
    target.unlink()  # a hard link of a file the run wrote: replace it, do not write through it
    if damage == "corrupt":
        target.write_text("bit rot")
    assert not restore_run("train", key, layout), "the stage runs again instead"
    assert _contents(layout) == before, "not one file of a partial set is restored"
    assert not outputs_current("train", key, layout)


def test_a_run_with_a_missing_output_is_not_stored(layout, tmp_path: Path) -> None:
    config = load_config(write_tiny_params(tmp_path / "params.yaml"))
    key = stage_key("train", config, layout)
    (layout.root / "plots/train.csv").unlink()
    assert not save_run("train", key, layout, None)
    assert not restore_run("train", key, layout)


def test_the_stage_task_returns_the_stored_result_as_the_object_it_returned(
    layout, tmp_path: Path
) -> None:
    """What a restored stage hands the next one is what it handed it when it ran."""
    from iocane.data.prepared import PreparedRef
    from tasks.prefect_tasks import stage_task

    calls = []

    def gate(config, layout: Layout) -> PreparedRef:
        calls.append(config.gate.min_robust_accuracy)
        write_json(layout.metrics_file("gate"), {"threshold": calls[-1]})
        return PreparedRef(path=str(layout.prepared_dir), fingerprint=f"run {len(calls)}")

    task = stage_task(gate, "gate")
    params = write_tiny_params(tmp_path / "params.yaml")
    config, other = load_config(params), load_config(params, ["gate.min_robust_accuracy=0.5"])
    first = task.fn(config, layout)
    task.fn(other, layout)
    key = stage_key("gate", config, layout)
    assert restore_run("gate", key, layout)
    again = task.fn(config, layout)
    assert len(calls) == 2, "the restored stage does not run"
    assert isinstance(again, PreparedRef) and again == first
