"""Training to a time budget: the decision's arithmetic, training to a budget is training with
the decided epochs (weights equal to the bit), a resume keeps the decision without
recalibrating, a machine that slows down shortens the plan (the lr schedule with it) or stops
it, DDP ranks agree on one decision, and no budget changes nothing."""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.datasets import load_digits

import iocane.training.budget as budget
import iocane.training.epoch as epoch_module
from attacks import PGD
from iocane.config import OptimConfig
from iocane.data.prepared import PreparedData, Split
from iocane.layout import Layout
from iocane.training.budget import (
    BudgetDecision,
    EpochCost,
    decide,
    plan_epochs,
    replan,
    with_epochs,
)
from iocane.training.loop import fit
from iocane.training.ranks import Ranks
from iocane.training.recipes import AdversarialRecipe
from iocane.training.state import continued_scheduler, make_scheduler
from models import ModelSpec, build_model

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=4)
# 20 epochs as configured: a budget replaces them (and the cosine schedule's length).
OPTIM = OptimConfig(
    epochs=20, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5.0e-4, lr_schedule="cosine"
)
# A ramp longer than the epochs the budget buys: it is cut to them.
RAMP = 5


def _recipe(method: str) -> AdversarialRecipe:
    return AdversarialRecipe(
        norm="Linf",
        eps=0.1,
        step_size=0.05,
        steps=2,
        random_start=True,
        adv_weight=0.5,
        eps_ramp_epochs=RAMP,
        method=method,
        free_replays=2,
    )


def _data() -> PreparedData:
    digits = load_digits()
    images = torch.tensor(digits.images[:300] / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target[:300])
    held_out = Split(images[240:], labels[240:])
    return PreparedData(Split(images[:240], labels[:240]), held_out, held_out, meta={})


def _fit(
    root: Path,
    *,
    recipe: AdversarialRecipe,
    optim: OptimConfig = OPTIM,
    budget_minutes: float = 0.0,
    ranks: Ranks | None = None,
) -> dict:
    torch.manual_seed(0)
    return fit(
        stage="train",
        model=build_model(SPEC),
        spec=SPEC,
        data=_data(),
        optim=optim,
        recipe=recipe,
        val_attack=PGD(eps=0.1, steps=2, seed=1),
        layout=Layout(root),
        seed=5,
        run_key="key",
        device=torch.device("cpu"),
        ranks=ranks,
        budget_minutes=budget_minutes,
    )


def _fake_clock(monkeypatch: pytest.MonkeyPatch, tick: float = 0.5) -> None:
    """Calibration's clock advances ``tick`` seconds a reading: the decision is deterministic
    (every step 0.5 s, validation 0.5 s, the calibration 8.5 s), the steps are real."""
    readings = itertools.count(0.0, tick)
    monkeypatch.setattr(budget, "perf_counter", lambda: next(readings))


def _step_clock(monkeypatch: pytest.MonkeyPatch, step_seconds: Callable[[int], float]) -> None:
    """The training epochs' clock moves only in their steps, ``step_seconds(k)`` in the k-th
    (0-based; calibration's steps are not counted): a machine that slows down, exactly."""
    now, steps = [0.0], itertools.count()
    real_step = epoch_module.train_step

    def timed_step(*args: object, **kwargs: object):
        now[0] += step_seconds(next(steps))
        return real_step(*args, **kwargs)

    monkeypatch.setattr(epoch_module, "train_step", timed_step)
    monkeypatch.setattr(epoch_module, "time", SimpleNamespace(perf_counter=lambda: now[0]))


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(Layout(root).model_file("train"), weights_only=True)["state_dict"]


def _history(root: Path) -> list[dict]:
    checkpoint = torch.load(
        sorted(Layout(root).checkpoint_dir("train").glob("epoch-*.pt"))[-1], weights_only=True
    )
    return [{k: v for k, v in row.items() if k != "seconds"} for row in checkpoint["history"]]


def test_the_epochs_fill_what_is_left_of_the_budget_after_a_margin() -> None:
    # 60 s, 5 s spent: 55 s at 10 s + 10% an epoch
    assert plan_epochs(1.0, epoch_seconds=10.0, spent_seconds=5.0) == 5
    assert plan_epochs(0.01, epoch_seconds=10.0, spent_seconds=5.0) == 1  # at least one
    cost = EpochCost(
        step_seconds=0.5, validation_seconds=2.0, first_step_extra_seconds=3.0,
        calibration_seconds=7.0,
    )  # fmt: skip
    decision = decide(2.0, cost, batches_per_epoch=20)
    assert decision.epoch_seconds == 12.0
    assert decision.epochs == 8  # (120 - 7 - 3) / 13.2 = 8.3
    assert BudgetDecision.from_dict(decision.to_dict()) == decision


def test_the_decision_sets_the_schedule_and_cuts_a_longer_ramp() -> None:
    optim, recipe = with_epochs(5, OPTIM, _recipe("pgd"))
    assert optim.epochs == 5 and optim.lr == OPTIM.lr
    assert recipe.eps_ramp_epochs == 5
    short = replace(_recipe("pgd"), eps_ramp_epochs=2)
    assert with_epochs(5, OPTIM, short)[1] is short
    assert with_epochs(5, OPTIM, None)[1] is None


def test_the_plan_shrinks_to_the_epochs_as_long_as_the_last_that_still_fit() -> None:
    decision = decide(1.0, EpochCost(1.0, 0.0, 0.0, 5.0), batches_per_epoch=10)
    assert decision.epochs == 5  # (60 - 5) / 11
    assert replan(decision, 5, []) == 5
    assert replan(decision, 5, [{"seconds": 10.0}]) == 5  # 45 s left: 4 more
    assert replan(decision, 5, [{"seconds": 10.0}, {"seconds": 20.0}]) == 3  # 25 s: 1 more
    assert replan(decision, 5, [{"seconds": 10.0}, {"seconds": 40.0}]) == 2  # 5 s: none
    # A machine fast again does not lengthen a plan already shortened.
    assert replan(decision, 3, [{"seconds": 10.0}, {"seconds": 1.0}]) == 3


@pytest.mark.parametrize("method", ["pgd", "free"])
def test_a_budget_trains_exactly_what_its_decided_epochs_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """The calibration runs real steps on a copy: the run after it is, to the bit, the run with
    ``epochs`` set to the decision (and the ramp cut to it)."""
    _fake_clock(monkeypatch)
    # 4 batches an epoch: (0.3 * 60 - 8.5) / ((4 * 0.5 + 0.5) * 1.1) = 3.5
    budgeted = _fit(tmp_path / "budget", recipe=_recipe(method), budget_minutes=0.3)
    assert budgeted["budget_epochs"] == budgeted["epochs"] == budgeted["last_epoch"] == 3
    assert budgeted["budget_minutes"] == 0.3
    assert budgeted["calibrated_epoch_seconds"] == pytest.approx(2.5)
    assert budgeted["calibration_seconds"] == pytest.approx(8.5)

    plain = _fit(
        tmp_path / "plain",
        recipe=replace(_recipe(method), eps_ramp_epochs=3),
        optim=OPTIM.model_copy(update={"epochs": 3}),
    )
    assert "budget_epochs" not in plain
    assert _history(tmp_path / "budget") == _history(tmp_path / "plain")
    reference = _weights(tmp_path / "plain")
    for name, tensor in _weights(tmp_path / "budget").items():
        assert torch.equal(tensor, reference[name]), name


def test_a_resumed_run_keeps_its_decision_and_does_not_recalibrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_clock(monkeypatch)
    _fit(tmp_path / "a", recipe=_recipe("pgd"), budget_minutes=0.3)
    interrupted = Layout(tmp_path / "b")
    _fit(interrupted.root, recipe=_recipe("pgd"), budget_minutes=0.3)
    checkpoint = torch.load(interrupted.checkpoint_dir("train") / "epoch-0002.pt")
    assert checkpoint["budget"]["epochs"] == 3
    # As if the process died during epoch 3; on resume, this machine is now much slower.
    (interrupted.checkpoint_dir("train") / "epoch-0003.pt").unlink()
    interrupted.model_file("train").unlink()

    def no_calibration(*_: object) -> EpochCost:
        raise AssertionError("a resumed run must not recalibrate")

    monkeypatch.setattr(budget, "measure_epoch", no_calibration)
    resumed = _fit(interrupted.root, recipe=_recipe("pgd"), budget_minutes=0.3)
    assert resumed["resumed_after_epoch"] == 2 and resumed["budget_epochs"] == 3
    reference = _weights(tmp_path / "a")
    for name, tensor in _weights(interrupted.root).items():
        assert torch.equal(tensor, reference[name]), name


def test_a_machine_slower_than_calibrated_stops_before_overrunning_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calibration decides 3 epochs; then every step takes 1.3 s (a shared host got busy):
    after epoch 1 (8.5 s of calibration + 5.2 s), another 5.2 s epoch would end past the 18 s
    budget, so training stops there, says so, and a rerun does not train on."""
    _fake_clock(monkeypatch)
    _step_clock(monkeypatch, lambda _: 1.3)
    metrics = _fit(tmp_path, recipe=_recipe("pgd"), budget_minutes=0.3)
    assert metrics["budget_epochs"] == 3 and metrics["budget_stopped_after_epoch"] == 1
    assert metrics["selected_epoch"] == 1 and len(_history(tmp_path)) == 1
    written = json.loads(Layout(tmp_path).metrics_file("train").read_text())
    assert written["budget_stopped_after_epoch"] == 1

    _step_clock(monkeypatch, lambda _: 0.0)  # fast again: the call stands
    again = _fit(tmp_path, recipe=_recipe("pgd"), budget_minutes=0.3)
    assert again["budget_stopped_after_epoch"] == 1 and len(_history(tmp_path)) == 1


@pytest.mark.parametrize("schedule", ["cosine", "step", "onecycle", "constant"])
def test_a_shortened_schedule_goes_on_where_the_shorter_one_would_be(schedule: str) -> None:
    """Two epochs down a schedule of 6, rebuilt over 3: the lr is the 3-epoch schedule's after
    two epochs (the recursive forms restart from the initial lr, not from the current one)."""
    optim = OPTIM.model_copy(update={"lr_schedule": schedule, "epochs": 6})
    shorter = optim.model_copy(update={"epochs": 3})
    steps = 4 if schedule == "onecycle" else 1  # onecycle steps every batch: 4 an epoch

    def stepped(config: OptimConfig) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
        scheduler = make_scheduler(optimizer, config, batches_per_epoch=4)
        for _ in range(2 * steps):
            optimizer.step()
            scheduler.step()
        return optimizer

    run = stepped(optim)
    continued_scheduler(run, shorter, batches_per_epoch=4, epochs_done=2)
    assert run.param_groups[0]["lr"] == pytest.approx(stepped(shorter).param_groups[0]["lr"])
    if schedule != "constant":
        assert stepped(optim).param_groups[0]["lr"] != pytest.approx(run.param_groups[0]["lr"])


def _slows_after_epoch_1(step: int) -> float:
    return 0.5 if step < 4 else 1.5  # 4 steps an epoch: 2 s, then 6 s


def test_a_slower_machine_shortens_the_plan_and_the_schedule_still_ends_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """27 s decide 6 epochs ((27 - 8.5) / 2.75); epoch 1 takes 2 s, then each 6 s: after epoch
    2 (16.5 s spent) one more fits, so the plan becomes 3 epochs and the cosine schedule is
    rebuilt over 3: epoch 3 runs at its last lr, not halfway down a schedule of 6. A run resumed
    after epoch 2 goes on with that plan, to the same weights."""
    _fake_clock(monkeypatch)
    _step_clock(monkeypatch, _slows_after_epoch_1)
    with caplog.at_level(logging.WARNING, logger="iocane"):
        metrics = _fit(tmp_path / "a", recipe=_recipe("pgd"), budget_minutes=0.45)
    assert metrics["budget_epochs"] == 6 and metrics["epochs"] == 3
    assert metrics["budget_stopped_after_epoch"] == 3 and metrics["last_epoch"] == 3
    assert "3 epochs instead of 6, the lr schedule shortened to them" in caplog.text
    lrs = [row["lr"] for row in _history(tmp_path / "a")]
    cosine = [(1 + math.cos(math.pi * e / 6)) / 2 for e in range(2)] + [
        (1 + math.cos(math.pi * 2 / 3)) / 2
    ]
    assert lrs == pytest.approx([OPTIM.lr * factor for factor in cosine])

    resumed = Layout(tmp_path / "b")
    _step_clock(monkeypatch, _slows_after_epoch_1)
    _fit(resumed.root, recipe=_recipe("pgd"), budget_minutes=0.45)
    checkpoint = torch.load(resumed.checkpoint_dir("train") / "epoch-0002.pt")
    assert checkpoint["planned_epochs"] == 3 and checkpoint["budget"]["epochs"] == 6
    (resumed.checkpoint_dir("train") / "epoch-0003.pt").unlink()
    resumed.model_file("train").unlink()
    _step_clock(monkeypatch, lambda _: 1.5)  # epoch 3, as slow as it was
    again = _fit(resumed.root, recipe=_recipe("pgd"), budget_minutes=0.45)
    assert again["resumed_after_epoch"] == 2 and again["epochs"] == 3
    reference = _weights(tmp_path / "a")
    for name, tensor in _weights(resumed.root).items():
        assert torch.equal(tensor, reference[name]), name


def test_no_budget_neither_calibrates_nor_records_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_calibration(*_: object) -> EpochCost:
        raise AssertionError("budget_minutes 0 must not calibrate")

    monkeypatch.setattr(budget, "measure_epoch", no_calibration)
    result = _fit(tmp_path, recipe=_recipe("pgd"), optim=OPTIM.model_copy(update={"epochs": 2}))
    assert result["epochs"] == 2
    assert not {"budget_minutes", "budget_epochs", "calibrated_epoch_seconds"} & set(result)
    checkpoint = torch.load(Layout(tmp_path).checkpoint_dir("train") / "epoch-0002.pt")
    assert "budget" not in checkpoint


def _rank(rank: int, world_size: int, init_file: str, root: str) -> None:
    """A DDP rank training to a budget; rank 1's clock runs twice as fast as rank 0's, so each
    alone would decide otherwise."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    readings = itertools.count(0.0, 0.5 * (rank + 1))
    budget.perf_counter = lambda: next(readings)
    try:
        result = _fit(
            Path(root), recipe=_recipe("pgd"), budget_minutes=0.5, ranks=Ranks(rank, world_size)
        )
        path = Path(root) / f"rank-{rank}.json"
        path.write_text(json.dumps({k: result[k] for k in ("budget_epochs", "epochs")}))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_on_the_slowest_ranks_decision(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    results = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    # Rank 1's figures: 4 global batches of 1.0 s, validation 1.0 s, calibration 17 s:
    # (30 - 17) / (5 * 1.1) = 2.4 (rank 0's alone: (30 - 8.5) / 2.75 = 7.8)
    assert results[0] == results[1] == {"budget_epochs": 2, "epochs": 2}
    metrics = json.loads(Layout(tmp_path).metrics_file("train").read_text())
    assert metrics["budget_epochs"] == 2 and metrics["processes"] == 2


def test_the_model_card_says_the_epochs_filled_the_budget(params_document: dict) -> None:
    from iocane.config import config_from_dict
    from iocane.reports.model_card import _recipe_lines

    config = config_from_dict(params_document)  # 20 epochs, eps ramped over 2
    decided = {"budget_minutes": 0.5, "budget_epochs": 1, "calibrated_epoch_seconds": 4.19}
    (line,) = [line for line in _recipe_lines(config, decided) if "Adversarial" in line]
    assert "1 epoch, the number that filled a training budget of 0.5 minutes" in line
    assert "(one epoch calibrated at 4.2 s on the machine that trained it)" in line
    assert "eps ramped over 1 epochs" in line
    stopped = {**decided, "budget_epochs": 3, "budget_stopped_after_epoch": 2}
    (line,) = [line for line in _recipe_lines(config, stopped) if "Adversarial" in line]
    assert "3 epochs, the number that filled" in line
    assert "stopped after epoch 2, when the machine ran slower than calibrated" in line
    (line,) = [line for line in _recipe_lines(config, {}) if "Adversarial" in line]
    assert f": {config.train.epochs} epochs, " in line and "budget" not in line
