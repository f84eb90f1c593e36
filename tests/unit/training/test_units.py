"""The named units of the training loop: the train state to and from a checkpoint, an epoch's
position in ``partial.pt``, the collapse record, the run key's code, the keyword-only step, and
the import structure of the package (no circles; the loop never imports the launcher)."""

from __future__ import annotations

import ast
import dataclasses
import logging
from pathlib import Path

import pytest
import torch

import iocane.training
from iocane.base.config import OptimConfig
from iocane.pipeline.keys import stage_spec
from iocane.training import checkpoints
from iocane.training.checkpoints import run_key
from iocane.training.epoch import EpochProgress, batches_per_epoch
from iocane.training.ranks import Ranks
from iocane.training.recipes import train_step
from iocane.training.selection import collapse_record, selection
from iocane.training.state import TrainState

OPTIM = OptimConfig(
    epochs=4, batch_size=8, lr=0.1, momentum=0.9, weight_decay=5.0e-4, lr_schedule="step"
)
CPU = torch.device("cpu")
PACKAGE = Path(iocane.training.__file__).parent


def _state(seed: int = 3) -> TrainState:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    return TrainState.start(model, OPTIM, seed=seed, free_delta_shape=(2, 4), device=CPU)


def _train_a_little(state: TrainState) -> None:
    """A step that moves the weights, the optimiser's momentum, the schedule and the shuffle."""
    state.model(torch.randn(8, 4)).sum().backward()
    state.optimizer.step()
    state.scheduler.step()
    torch.randperm(10, generator=state.shuffle)


def test_a_restored_state_continues_exactly_as_the_saved_one() -> None:
    saved = _state()
    _train_a_little(saved)
    saved.epoch, saved.history = 1, [{"epoch": 1}]
    checkpoint = saved.to_checkpoint(stage="train", run_key="k", spec=_Spec(), keep_free_delta=True)
    assert checkpoint["epoch"] == 1 and checkpoint["run_key"] == "k"
    assert checkpoint["free_delta"] is saved.free_delta
    restored = _state(seed=99)  # other weights, other random states
    restored.restore(checkpoint)
    assert restored.epoch == 1 and restored.history == [{"epoch": 1}]
    assert restored.history is not checkpoint["history"], "the history is the state's own"
    # every random state is put back: the same draws follow
    assert torch.equal(
        torch.randperm(10, generator=saved.shuffle), torch.randperm(10, generator=restored.shuffle)
    )
    torch.set_rng_state(checkpoint["rng"]["torch"])
    first = torch.rand(3)
    restored.restore(checkpoint)
    assert torch.equal(first, torch.rand(3))
    for a, b in zip(saved.model.parameters(), restored.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert restored.scheduler.state_dict() == saved.scheduler.state_dict()
    momentum = saved.optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(restored.optimizer.state_dict()["state"][0]["momentum_buffer"], momentum)


def test_free_delta_is_kept_only_when_asked() -> None:
    state = _state()
    checkpoint = state.to_checkpoint(
        stage="train", run_key="k", spec=_Spec(), keep_free_delta=False
    )
    assert checkpoint["free_delta"] is None
    other = _state()
    other.free_delta = torch.ones(2, 4)
    other.restore(checkpoint)
    assert torch.equal(other.free_delta, torch.ones(2, 4)), "no free_delta: the current one stays"


@dataclasses.dataclass
class _Spec:
    def to_dict(self) -> dict:
        return {"name": "tiny"}


def test_a_partial_pt_from_before_the_sums_were_named_resumes_with_its_sums() -> None:
    progress = EpochProgress.start(20, torch.Generator().manual_seed(0), CPU)
    position = dataclasses.replace(progress, batch=1, stopped="SIGTERM").position()
    old_names = {"images": "n", "clean_loss_total": "cl", "clean_correct": "cc"}
    old_names |= {"adv_loss_total": "al", "adv_correct": "ac"}
    values = {name: torch.tensor(float(i + 1)) for i, name in enumerate(position["sums"])}
    position["sums"] = {old_names[name]: value for name, value in values.items()}
    resumed = EpochProgress.resume(position, CPU)
    assert resumed.sums == values


def test_an_epoch_position_survives_partial_pt() -> None:
    shuffle = torch.Generator().manual_seed(0)
    progress = EpochProgress.start(20, shuffle, CPU)
    progress.sums["images"] += 8
    stopped = dataclasses.replace(progress, batch=1, eps=0.05, stopped="SIGTERM")
    position = stopped.position()
    assert position["signal"] == "SIGTERM" and position["batch"] == 1
    resumed = EpochProgress.begin(20, shuffle, CPU, resume_from=position)
    assert torch.equal(resumed.order, progress.order) and resumed.batch == 1
    assert resumed.eps == 0.05 and resumed.sums["images"].item() == 8
    assert resumed.stopped is None
    # a new epoch draws its order from the shuffle generator
    after = torch.Generator().manual_seed(0)
    torch.randperm(20, generator=after)
    fresh = EpochProgress.begin(20, shuffle, CPU)
    assert torch.equal(fresh.order, torch.randperm(20, generator=after))


def test_batches_per_epoch_skip_a_short_last_batch_only_under_ddp() -> None:
    assert batches_per_epoch(65, 16, Ranks()) == 5
    assert batches_per_epoch(65, 16, Ranks(0, 2)) == 4  # 1 image left: fewer than 2 per rank
    assert batches_per_epoch(68, 16, Ranks(0, 2)) == 5  # 4 left: 2 per rank


def test_a_collapse_record_names_the_epoch_to_restore(caplog: pytest.LogCaptureFixture) -> None:
    history = [
        {"epoch": 1, "val_adv_accuracy": 0.3},
        {"epoch": 2, "val_adv_accuracy": 0.5},
        {"epoch": 3, "val_adv_accuracy": 0.05},
    ]
    assert collapse_record("train", history[:2]) is None
    with caplog.at_level(logging.WARNING, logger="iocane"):
        collapse = collapse_record("train", history)
    assert collapse == {
        "epoch": 3,
        "val_adv_accuracy": 0.05,
        "best_val_adv_accuracy": 0.5,
        "restored_epoch": 2,
    }
    assert "catastrophic overfitting at epoch 3" in caplog.text
    assert selection(history, "last", collapse) == {
        "selected_epoch": 2,
        "selection": "last",
        "best_epoch": 2,
        "last_epoch": 3,
    }


def test_the_run_key_covers_every_module_of_the_package() -> None:
    """The run key hashes the stage's code deps in dvc.yaml: the whole training package."""
    for stage in ("warmup", "train"):
        assert "iocane/training" in stage_spec(stage).code, stage
    assert {"state.py", "epoch.py", "checkpoints.py", "ranks.py", "launcher.py"} <= {
        path.name for path in PACKAGE.glob("*.py")
    }


def test_the_run_key_changes_with_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    before = run_key("train", 1, "params")
    assert before == run_key("train", 1, "params")
    monkeypatch.setattr(checkpoints, "stage_code_version", lambda stage: f"other code {stage}")
    assert run_key("train", 1, "params") != before


def test_the_step_takes_its_context_by_keyword() -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = torch.rand(2, 4), torch.tensor([0, 1])
    with pytest.raises(TypeError):
        train_step(model, optimizer, images, labels, None, 0.0, 0, 0, torch.zeros(2, 4))
    stats = train_step(
        model,
        optimizer,
        images,
        labels,
        recipe=None,
        eps=0.0,
        seed=0,
        batch=0,
        free_delta=torch.zeros(2, 4),
    )
    assert torch.isfinite(stats.objective)


def _imports(path: Path) -> set[str]:
    """The modules of iocane.training a module imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.rsplit(".", 1)[-1] for name in names if name.startswith("iocane.training.")}


def test_no_module_of_the_package_imports_in_a_circle() -> None:
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}

    def reaches(start: str, target: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for name in graph.get(todo.pop(), ()):
                if name == target:
                    return True
                if name not in seen:
                    seen.add(name)
                    todo.append(name)
        return False

    circles = [name for name in graph if reaches(name, name)]
    assert circles == []
    assert not reaches("loop", "launcher"), "the launcher calls the loop, never the reverse"
    assert not reaches("ranks", "loop")


def test_the_train_stage_and_the_ranks_do_not_import_each_other() -> None:
    root = PACKAGE.parents[1]
    stage = _imports(root / "tasks" / "train.py")
    assert "launcher" in stage and "ranks" in stage  # the stage decides how to train
    ranks_source = (PACKAGE / "ranks.py").read_text() + (PACKAGE / "launcher.py").read_text()
    assert "tasks" not in {
        node.module.split(".")[0]
        for node in ast.walk(ast.parse(ranks_source))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not (PACKAGE / "distributed.py").exists(), "split into ranks.py and launcher.py"
