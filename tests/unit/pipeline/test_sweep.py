"""The sweep's engine (iocane.pipeline.sweep): the grid, the Pareto front, the shared warmups,
the ranking and the data snapshot, without running a point."""

from __future__ import annotations

from pathlib import Path

import pytest

from iocane.base.config import load_config
from iocane.pipeline.sweep.grid import grid, warmup_directory, warmups
from iocane.pipeline.sweep.links import link_directory, snapshot
from iocane.pipeline.sweep.pareto import mark_pareto, pareto_front
from iocane.pipeline.sweep.ranking import min_clean_accuracy, rank
from tests.helpers.paths import PROJECT_ROOT


def test_the_default_grid_is_the_one_point_iocane_run_trains() -> None:
    config = load_config(PROJECT_ROOT / "params.yaml")
    (point,) = grid(config)
    assert point.config == config and point.judged == config


def test_the_grid_is_every_combination_judged_at_one_threat_model() -> None:
    config = load_config(
        PROJECT_ROOT / "params.yaml",
        ["sweep.eps=[0.05, 0.2]", "sweep.method=[pgd, free]", "sweep.width=[1, 2]"],
    )
    points = grid(config)
    assert len(points) == 8 and len({point.name for point in points}) == 8
    assert {point.config.train.eps for point in points} == {0.05, 0.2}
    assert {point.config.model.width for point in points} == {1, 2}
    assert {point.judged.train.eps for point in points} == {config.train.eps}


def test_one_warmup_per_width_and_seed_in_the_order_of_the_points() -> None:
    config = load_config(
        PROJECT_ROOT / "params.yaml",
        ["sweep.eps=[0.05, 0.2]", "sweep.width=[2, 1]", "sweep.seed=[3, 4]"],
    )
    points = grid(config)
    needed = warmups(points)
    model = config.model.name
    assert list(needed) == [(model, 2, 3), (model, 2, 4), (model, 1, 3), (model, 1, 4)]
    for (name, width, seed), warmup_config in needed.items():
        first = next(point for point in points if point.warmup_key == (name, width, seed))
        assert warmup_config == first.config
        assert (warmup_config.model.name, warmup_config.model.width, warmup_config.seed) == (
            name,
            width,
            seed,
        )


def test_the_older_axes_keep_their_point_names_and_order() -> None:
    config = load_config(
        PROJECT_ROOT / "params.yaml", ["sweep.eps=[0.05, 0.2]", "sweep.width=[2, 1]", "seed=0"]
    )
    assert [point.name for point in grid(config)] == [
        f"eps{eps}-{config.train.method}-w{width}-s0" for eps in (0.05, 0.2) for width in (2, 1)
    ]


def test_the_budget_and_model_axes_cross_with_width() -> None:
    config = load_config(
        PROJECT_ROOT / "params.yaml",
        [
            "sweep.model=[madry_cnn, small_cnn, 'torchvision:resnet18']",
            "sweep.width=[1, 2]",
            "sweep.budget_minutes=[0, 2.5]",
            "sweep.method=[pgd]",
            "seed=0",
        ],
    )
    points = grid(config)
    # madry_cnn and small_cnn at both widths; resnet18 at width 0 only (widths are iocane's)
    assert len(points) == (2 + 2 + 1) * 2 and len({p.name for p in points}) == len(points)
    by_name = {point.name: point.config for point in points}
    point = by_name["small_cnn-eps0.1-pgd-w2-b2.5m-s0"]
    assert (point.model.name, point.model.width) == ("small_cnn", 2)
    assert point.train.budget_minutes == 2.5
    resnet = by_name["torchvision_resnet18-eps0.1-pgd-w0-b0m-s0"]
    assert (resnet.model.name, resnet.model.width, resnet.train.budget_minutes) == (
        "torchvision:resnet18",
        0,
        0,
    )
    # the budget is the train stage's: points that differ only by it share a warmup
    needed = warmups(points)
    assert list(needed) == [
        ("madry_cnn", 1, 0),
        ("madry_cnn", 2, 0),
        ("small_cnn", 1, 0),
        ("small_cnn", 2, 0),
        ("torchvision:resnet18", 0, 0),
    ]
    assert len({warmup_directory(key) for key in needed}) == 5
    assert warmup_directory(("torchvision:resnet18", 0, 0)) == "warmup-torchvision_resnet18-w0-s0"


def test_the_steps_axis_scales_the_step_and_the_lr_axis_sets_the_rate() -> None:
    config = load_config(
        PROJECT_ROOT / "params.yaml",
        ["sweep.steps=[3, 10]", "sweep.lr=[0.01]", "train.eps=0.1", "seed=0"],
    )
    points = {point.name: point.config.train for point in grid(config)}
    method = config.train.method
    few = points[f"eps0.1-{method}-k3-lr0.01-w{config.model.width}-s0"]
    assert (few.steps, few.lr) == (3, 0.01)
    assert few.step_size == pytest.approx(2.5 * 0.1 / 3)
    assert {train.steps for train in points.values()} == {3, 10}


def test_the_clean_floor_is_the_gates_unless_the_sweep_sets_one() -> None:
    config = load_config(PROJECT_ROOT / "params.yaml")
    assert min_clean_accuracy(config) == config.gate.min_clean_accuracy
    floor = load_config(PROJECT_ROOT / "params.yaml", ["sweep.min_clean_accuracy=0.5"])
    assert min_clean_accuracy(floor) == 0.5


def _row(name: str, clean: float, robust: float, flags: int = 0) -> dict:
    return {"point": name, "clean_accuracy": clean, "robust_accuracy": robust, "trust_flags": flags}


def test_pareto_front() -> None:
    rows = [
        _row("robust", 0.80, 0.60),
        _row("accurate", 0.95, 0.40),
        _row("dominated", 0.79, 0.55),
        _row("tied-but-worse", 0.80, 0.59),
        _row("flagged", 0.99, 0.99, flags=1),  # its robust accuracy is not trusted
    ]
    assert pareto_front(rows) == {"robust", "accurate"}
    assert mark_pareto(rows) == {"robust", "accurate"}
    assert [row["pareto"] for row in rows] == [True, True, False, False, False]


def _timed(name: str, clean: float, robust: float, seconds: float, flags: int = 0) -> dict:
    return {**_row(name, clean, robust, flags), "train_seconds": seconds, "minutes": 9.0}


def test_the_ranking_is_robust_accuracy_above_the_clean_floor() -> None:
    rows = [
        _timed("below-floor", 0.70, 0.90, 10),  # the most robust, but too inaccurate
        _timed("flagged", 0.95, 0.80, 10, flags=1),  # its robust accuracy is not trusted
        _timed("slow", 0.85, 0.60, 300),
        _timed("fast", 0.85, 0.60, 100),  # same accuracies: the shorter training wins
        _timed("accurate", 0.90, 0.60, 500),  # same robust: the higher clean accuracy wins
        _timed("best", 0.80, 0.65, 900),
        _timed("at-floor", 0.75, 0.10, 1),  # the floor itself passes
    ]
    ordered = rank(rows, 0.75)
    assert [(r["point"], r["rank"]) for r in ordered] == [
        ("best", 1),
        ("accurate", 2),
        ("fast", 3),
        ("slow", 4),
        ("at-floor", 5),
        ("below-floor", None),
        ("flagged", None),
    ]
    reasons = {r["point"]: r["unranked_because"] for r in ordered}
    assert reasons["below-floor"] == "clean 0.7000 < 0.75"
    assert reasons["flagged"] == "1 trust flag(s)" and reasons["best"] == ""
    both = rank([_timed("both", 0.5, 0.5, 1, flags=2)], 0.75)[0]["unranked_because"]
    assert both == "clean 0.5000 < 0.75; 2 trust flag(s)"


def test_without_train_seconds_the_points_whole_time_breaks_ties() -> None:
    rows = [{**_row("long", 0.8, 0.5), "minutes": 3.0}, {**_row("short", 0.8, 0.5), "minutes": 1}]
    assert [r["point"] for r in rank(rows, 0.0)] == ["short", "long"]
    assert rank([], 0.5) == []


def test_the_snapshot_keeps_the_old_data_when_the_project_rewrites_it(tmp_path: Path) -> None:
    source = tmp_path / "prepared"
    source.mkdir()
    (source / "train.npz").write_text("old")
    copy = snapshot(source, tmp_path / "sweep" / "prepared")
    replacement = source / "train.npz.tmp"  # the project's writes are renames
    replacement.write_text("new")
    replacement.replace(source / "train.npz")
    assert (copy / "train.npz").read_text() == "old"

    link = tmp_path / "point" / "data" / "prepared"
    link_directory(link, copy)
    link_directory(link, tmp_path)  # already linked: kept
    assert link.resolve() == copy.resolve() and (link / "train.npz").read_text() == "old"
