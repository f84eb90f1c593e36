"""Training to a time budget: the decision's arithmetic, training to a budget is training with
the decided epochs (weights equal to the bit), a resume keeps the decision without
recalibrating, a machine that slows down shortens the plan (the lr schedule with it) or stops
it, one that runs faster lengthens it, what is left after the last whole epoch is trained as a
partial epoch, DDP ranks agree on one decision, and no budget changes nothing."""

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

import iocane.training.budget as budget
import iocane.training.epoch as epoch_module
from iocane.base.config import OptimConfig
from iocane.base.layout import Layout
from iocane.training.budget import (
    BudgetDecision,
    EpochCost,
    Plan,
    decide,
    plan_epochs,
    replan,
    with_epochs,
)
from iocane.training.epoch import EpochTiming
from iocane.training.ranks import Ranks
from iocane.training.recipes import Recipe
from iocane.training.state import continued_scheduler, make_scheduler
from models import ModelSpec
from tests.helpers.tiny_training import adversarial_recipe, fit_held_out

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=4)
# 20 epochs as configured: a budget replaces them (and the cosine schedule's length).
OPTIM = OptimConfig(
    epochs=20, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5.0e-4, lr_schedule="cosine"
)
# A ramp longer than the epochs the budget buys: it is cut to them.
RAMP = 5


def _recipe(method: str) -> Recipe:
    return adversarial_recipe(
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


def _fit(
    root: Path,
    *,
    recipe: Recipe,
    optim: OptimConfig = OPTIM,
    budget_minutes: float = 0.0,
    ranks: Ranks | None = None,
) -> dict:
    return fit_held_out(root, SPEC, optim, recipe, ranks=ranks, budget_minutes=budget_minutes)


def _fake_clock(monkeypatch: pytest.MonkeyPatch, tick: float = 0.5) -> None:
    """Calibration's clock advances ``tick`` seconds a reading: the decision is deterministic
    (every step 0.5 s, validation 0.5 s, the calibration 8.5 s), the steps are real."""
    readings = itertools.count(0.0, tick)
    monkeypatch.setattr(budget, "perf_counter", lambda: next(readings))


def _step_clock(
    monkeypatch: pytest.MonkeyPatch,
    step_seconds: Callable[[int], float],
    validation_seconds: float = 0.0,
) -> None:
    """The training epochs' clock moves only in their steps, ``step_seconds(k)`` in the k-th
    (0-based; calibration's steps are not counted), and by ``validation_seconds`` in each
    epoch's validation: a machine that slows down or speeds up, exactly."""
    now, steps = [0.0], itertools.count()
    real_step, real_validation = epoch_module.train_step, epoch_module.evaluate_shards

    def timed_step(*args: object, **kwargs: object):
        now[0] += step_seconds(next(steps))
        return real_step(*args, **kwargs)

    def timed_validation(*args: object, **kwargs: object):
        now[0] += validation_seconds
        return real_validation(*args, **kwargs)

    monkeypatch.setattr(epoch_module, "train_step", timed_step)
    monkeypatch.setattr(epoch_module, "evaluate_shards", timed_validation)
    monkeypatch.setattr(epoch_module, "time", SimpleNamespace(perf_counter=lambda: now[0]))


def _as_calibrated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Epochs exactly as long as calibrated: 4 steps of 0.5 s and a validation of 0.5 s."""
    _step_clock(monkeypatch, lambda _: 0.5, validation_seconds=0.5)


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(Layout(root).model_file("train"), weights_only=True)["state_dict"]


def _history(root: Path) -> list[dict]:
    checkpoint = torch.load(
        sorted(Layout(root).checkpoint_dir("train").glob("epoch-*.pt"))[-1], weights_only=True
    )
    return [{k: v for k, v in row.items() if k != "seconds"} for row in checkpoint["history"]]


# 16.8 s: (16.8 - 8.5) / 2.75 = 3.02 epochs; the 0.05 s over 3 whole ones holds no step.
EXACT_BUDGET = 0.28


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
    # (120 - 7 - 3) / 1.1 = 100 s: 8 epochs of 12 s, then 4 s: a partial epoch of 4 steps (2 s)
    # and its validation (2 s); 4 steps is a fifth of an epoch, the least worth validating.
    assert decision.plan == Plan(9, 4) and decision.epochs == 9
    assert BudgetDecision.from_dict(decision.to_dict()) == decision
    # 118.8 s: 2.9 s after 8 epochs, room for 1 step: no partial epoch.
    assert decide(1.98, cost, batches_per_epoch=20).plan == Plan(8)
    # A decision a checkpoint kept before partial epochs existed.
    record = {k: v for k, v in decision.to_dict().items() if k != "last_epoch_steps"}
    assert BudgetDecision.from_dict(record).plan == Plan(9)


def test_a_plan_counts_steps() -> None:
    assert Plan(4, 4).steps(10) == 34 and Plan(3).steps(10) == 30
    assert Plan.from_steps(34, 10) == Plan(4, 4) and Plan.from_steps(30, 10) == Plan(3)
    assert Plan(4, 4).whole_epochs == 3


def test_the_decision_sets_the_schedule_and_cuts_a_longer_ramp() -> None:
    optim, recipe = with_epochs(5, OPTIM, _recipe("pgd"))
    assert optim.epochs == 5 and optim.lr == OPTIM.lr
    assert recipe.eps_ramp_epochs == 5
    # A partial last epoch trains at the full eps: the ramp ends with the whole epochs.
    assert with_epochs(5, OPTIM, _recipe("pgd"), last_epoch_steps=2)[1].eps_ramp_epochs == 4
    short = replace(_recipe("pgd"), eps_ramp_epochs=2)
    assert with_epochs(5, OPTIM, short)[1] is short
    assert with_epochs(5, OPTIM, None)[1] is None


def test_the_plan_follows_the_machine_both_ways_beyond_the_margin() -> None:
    """60 s, 5 s of calibration: 5 epochs of 10 s (steps of 0.9 s, validation 1 s) planned."""
    decision = decide(1.0, EpochCost(0.9, 1.0, 0.0, 5.0), batches_per_epoch=10)
    assert decision.plan == Plan(5)  # 55 / 1.1 = 50 s

    def after(*seconds: float) -> Plan:
        history = [{"seconds": s} for s in seconds]
        return replan(decision, Plan(5), history, EpochTiming(seconds[-1], 1.0, 10))

    assert replan(decision, Plan(5), []) == Plan(5)
    assert after(10.0) == Plan(5)  # as calibrated: 45 s left, the margin's 4.1 s hold no more
    assert after(10.0, 10.5) == Plan(5)  # 5% slower: the 3 epochs left still fit in 34.5 s
    # Slower: 25 s left hold one 20 s epoch and then 2 steps of 1.9 s with their validation.
    assert after(10.0, 20.0) == Plan(4, 2)
    assert after(10.0, 40.0) == Plan(2)  # 5 s: one step of 3.9 s, too few: stop here
    # Faster: one quick epoch is not yet a faster machine (the slower of the last two sets the
    # pace of growth), but it saved 5 s: 36.4 s after the margin hold 3 epochs of 10 s and 5
    # steps of 0.9 s with their validation. After two, 35 s are left, 31.8 after the margin: 6
    # epochs of 5 s more and 2 steps of 0.4 s with their validation.
    assert after(10.0, 5.0) == Plan(6, 5)
    assert after(10.0, 5.0, 5.0) == Plan(10, 2)
    # Without a timing, the row's seconds are all steps (a checkpoint's history on resume).
    assert replan(decision, Plan(5), [{"seconds": 10.0}]) == Plan(5)
    # A trained partial epoch ends the plan, however fast it was.
    done = [{"seconds": 10.0}, {"seconds": 1.0}, {"seconds": 1.0}]
    assert replan(decision, Plan(3, 4), done, EpochTiming(1.0, 0.5, 4)) == Plan(3, 4)


@pytest.mark.parametrize("method", ["pgd", "free"])
def test_a_budget_trains_exactly_what_its_decided_epochs_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """The calibration runs real steps on a copy: on a machine exactly as fast as calibrated,
    the run after it is, to the bit, the run with ``epochs`` set to the decision (and the ramp
    cut to it)."""
    _fake_clock(monkeypatch)
    _as_calibrated(monkeypatch)
    # 4 batches an epoch: (16.8 - 8.5) / ((4 * 0.5 + 0.5) * 1.1) = 3.02
    budgeted = _fit(tmp_path / "budget", recipe=_recipe(method), budget_minutes=EXACT_BUDGET)
    assert budgeted["budget_epochs"] == budgeted["epochs"] == budgeted["last_epoch"] == 3
    assert budgeted["last_epoch_steps"] is None
    assert budgeted["budget_minutes"] == EXACT_BUDGET
    assert budgeted["calibrated_epoch_seconds"] == pytest.approx(2.5)
    assert budgeted["calibration_seconds"] == pytest.approx(8.5)
    assert budgeted["budget_training_seconds"] == pytest.approx(7.5)

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
    _as_calibrated(monkeypatch)
    _fit(tmp_path / "a", recipe=_recipe("pgd"), budget_minutes=EXACT_BUDGET)
    interrupted = Layout(tmp_path / "b")
    _fit(interrupted.root, recipe=_recipe("pgd"), budget_minutes=EXACT_BUDGET)
    checkpoint = torch.load(interrupted.checkpoint_dir("train") / "epoch-0002.pt")
    assert checkpoint["budget"]["epochs"] == 3
    # As if the process died during epoch 3.
    (interrupted.checkpoint_dir("train") / "epoch-0003.pt").unlink()
    interrupted.model_file("train").unlink()

    def no_calibration(*_: object) -> EpochCost:
        raise AssertionError("a resumed run must not recalibrate")

    monkeypatch.setattr(budget, "measure_epoch", no_calibration)
    resumed = _fit(interrupted.root, recipe=_recipe("pgd"), budget_minutes=EXACT_BUDGET)
    assert resumed["resumed_after_epoch"] == 2 and resumed["budget_epochs"] == 3
    reference = _weights(tmp_path / "a")
    for name, tensor in _weights(interrupted.root).items():
        assert torch.equal(tensor, reference[name]), name


def test_a_machine_slower_than_calibrated_stops_before_overrunning_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """18 s decide 3 epochs and a partial one of 1 step ((18 - 8.5) / 1.1 = 8.6 s); then every
    step takes 2 s (a shared host got busy): after epoch 1 (8.5 s of calibration + 8.5 s) the
    1 s left holds no step, so training stops there, says so, and a rerun does not train on."""
    _fake_clock(monkeypatch)
    _step_clock(monkeypatch, lambda _: 2.0, validation_seconds=0.5)
    metrics = _fit(tmp_path, recipe=_recipe("pgd"), budget_minutes=0.3)
    assert metrics["budget_epochs"] == 4 and metrics["budget_stopped_after_epoch"] == 1
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
    return 0.5 if step < 4 else 1.5  # 4 steps an epoch: 2 s, then 6 s (and 0.5 s validation)


def test_a_slower_machine_shortens_the_plan_and_the_schedule_still_ends_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """25.5 s decide 6 epochs ((25.5 - 8.5) / 2.75 = 6.2); epoch 1 takes 2.5 s as calibrated,
    then each 6.5 s: after epoch 2 (17.5 s spent) one more fits and the 1.5 s after it hold no
    step, so the plan becomes 3 epochs and the cosine schedule is rebuilt over 3: epoch 3 runs
    at its last lr, not halfway down a schedule of 6. A run resumed after epoch 2 goes on with
    that plan, to the same weights."""
    _fake_clock(monkeypatch)
    _step_clock(monkeypatch, _slows_after_epoch_1, validation_seconds=0.5)
    with caplog.at_level(logging.WARNING, logger="iocane"):
        metrics = _fit(tmp_path / "a", recipe=_recipe("pgd"), budget_minutes=0.425)
    assert metrics["budget_epochs"] == 6 and metrics["epochs"] == 3
    assert metrics["budget_stopped_after_epoch"] == 3 and metrics["last_epoch"] == 3
    assert "3 epochs instead of 6 epochs, the lr schedule shortened" in caplog.text
    assert "ran slower than calibrated" in caplog.text
    lrs = [row["lr"] for row in _history(tmp_path / "a")]
    cosine = [(1 + math.cos(math.pi * e / 6)) / 2 for e in range(2)] + [
        (1 + math.cos(math.pi * 2 / 3)) / 2
    ]
    assert lrs == pytest.approx([OPTIM.lr * factor for factor in cosine])

    resumed = Layout(tmp_path / "b")
    _step_clock(monkeypatch, _slows_after_epoch_1, validation_seconds=0.5)
    _fit(resumed.root, recipe=_recipe("pgd"), budget_minutes=0.425)
    checkpoint = torch.load(resumed.checkpoint_dir("train") / "epoch-0002.pt")
    assert checkpoint["planned_epochs"] == 3 and checkpoint["budget"]["epochs"] == 6
    (resumed.checkpoint_dir("train") / "epoch-0003.pt").unlink()
    resumed.model_file("train").unlink()
    _step_clock(monkeypatch, lambda _: 1.5, validation_seconds=0.5)  # epoch 3, as slow as it was
    again = _fit(resumed.root, recipe=_recipe("pgd"), budget_minutes=0.425)
    assert again["resumed_after_epoch"] == 2 and again["epochs"] == 3
    reference = _weights(tmp_path / "a")
    for name, tensor in _weights(resumed.root).items():
        assert torch.equal(tensor, reference[name]), name


def test_a_faster_machine_lengthens_the_plan_and_the_schedule_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """25.5 s decide 6 epochs of 2.5 s; every epoch takes 1.5 s (steps of 0.25 s, as if the
    calibration ran on a cold machine): after epoch 1 (10 s spent) 15.5 s are left, 14.1 s after
    the margin: 9 epochs more. The plan grows to 10 epochs, epoch 2 runs at the lr of a 10-epoch
    cosine schedule, and the run ends within the budget having spent at least 90% of it."""
    _fake_clock(monkeypatch)
    _step_clock(monkeypatch, lambda _: 0.25, validation_seconds=0.5)
    with caplog.at_level(logging.INFO, logger="iocane"):
        metrics = _fit(tmp_path, recipe=_recipe("pgd"), budget_minutes=0.425)
    assert "10 epochs instead of 6 epochs, the lr schedule lengthened" in caplog.text
    assert "ran faster than calibrated" in caplog.text
    assert metrics["budget_epochs"] == 6 and metrics["epochs"] >= 10
    assert metrics["budget_stopped_after_epoch"] is None
    lrs = [row["lr"] for row in _history(tmp_path)]
    assert lrs[1] == pytest.approx(OPTIM.lr * (1 + math.cos(math.pi / 10)) / 2)
    spent = metrics["calibration_seconds"] + metrics["budget_training_seconds"]
    assert 0.9 * 25.5 <= spent <= 25.5


def test_what_is_left_after_the_whole_epochs_is_trained_as_a_partial_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """18 s on a machine as fast as calibrated: 3 whole epochs (16 s with the calibration) and
    2 steps with their validation (1.5 s) in what is left, as a fourth epoch that ends the
    onecycle schedule (its last step at lr 0), is validated and checkpointed, and resumes."""
    onecycle = OPTIM.model_copy(update={"lr_schedule": "onecycle"})
    _fake_clock(monkeypatch)
    _as_calibrated(monkeypatch)
    metrics = _fit(tmp_path / "a", recipe=_recipe("pgd"), optim=onecycle, budget_minutes=0.3)
    assert (metrics["epochs"], metrics["last_epoch_steps"], metrics["last_epoch"]) == (4, 2, 4)
    history = _history(tmp_path / "a")
    assert history[-1]["lr"] == 0.0 and history[-2]["lr"] > 0.0
    assert history[-1]["val_adv_accuracy"] is not None
    assert metrics["budget_training_seconds"] == pytest.approx(3 * 2.5 + 1.5)
    assert metrics["calibration_seconds"] + metrics["budget_training_seconds"] <= 18.0

    resumed = Layout(tmp_path / "b")
    _as_calibrated(monkeypatch)
    _fit(resumed.root, recipe=_recipe("pgd"), optim=onecycle, budget_minutes=0.3)
    checkpoint = torch.load(resumed.checkpoint_dir("train") / "epoch-0003.pt")
    assert (checkpoint["planned_epochs"], checkpoint["planned_last_epoch_steps"]) == (4, 2)
    (resumed.checkpoint_dir("train") / "epoch-0004.pt").unlink()
    resumed.model_file("train").unlink()
    again = _fit(resumed.root, recipe=_recipe("pgd"), optim=onecycle, budget_minutes=0.3)
    assert again["resumed_after_epoch"] == 3 and again["last_epoch_steps"] == 2
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
    """A DDP rank training to a budget; rank 1's clock runs twice as fast as rank 0's, in the
    calibration and in the epochs, so each alone would decide and replan otherwise."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    pace = 0.5 * (rank + 1)
    readings = itertools.count(0.0, pace)
    budget.perf_counter = lambda: next(readings)
    now = [0.0]
    real_step, real_validation = epoch_module.train_step, epoch_module.evaluate_shards

    def timed(real: Callable) -> Callable:
        def call(*args: object, **kwargs: object):
            now[0] += pace
            return real(*args, **kwargs)

        return call

    epoch_module.train_step = timed(real_step)
    epoch_module.evaluate_shards = timed(real_validation)
    epoch_module.time = SimpleNamespace(perf_counter=lambda: now[0])
    try:
        result = _fit(
            Path(root), recipe=_recipe("pgd"), budget_minutes=0.5, ranks=Ranks(rank, world_size)
        )
        path = Path(root) / f"rank-{rank}.json"
        keys = ("budget_epochs", "epochs", "last_epoch_steps")
        path.write_text(json.dumps({k: result[k] for k in keys}))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_on_the_slowest_ranks_decision(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    results = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    # Rank 1's figures: 4 global batches of 1.0 s, validation 1.0 s, calibration 17 s:
    # (30 - 17) / (5 * 1.1) = 2.4 (rank 0's alone: (30 - 8.5) / 2.75 = 7.8). After epoch 1
    # (5 s on rank 1), 8 s are left, 7.3 after the margin: an epoch and 1 step (rank 0, at
    # 2.5 s an epoch, would plan 3 epochs and 3 steps more); both go on with rank 1's plan.
    expected = {"budget_epochs": 2, "epochs": 3, "last_epoch_steps": 1}
    assert results[0] == results[1] == expected
    metrics = json.loads(Layout(tmp_path).metrics_file("train").read_text())
    assert metrics["budget_epochs"] == 2 and metrics["processes"] == 2


def test_the_model_card_says_the_epochs_filled_the_budget(params_document: dict) -> None:
    from iocane.base.config import config_from_dict
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
    grown = {**decided, "budget_epochs": 3, "epochs": 5, "last_epoch_steps": 2}
    (line,) = [line for line in _recipe_lines(config, grown) if "Adversarial" in line]
    assert "3 epochs, the number that filled" in line
    assert "5 trained, the last of them 2 steps long, as the plan followed" in line
    (line,) = [line for line in _recipe_lines(config, {}) if "Adversarial" in line]
    assert f": {config.train.epochs} epochs, " in line and "budget" not in line
