"""Data-parallel training: a DDP step in 2 processes is the one-process step on the global
batch; the train stage in 2 CPU processes (gloo, started by torchrun) trains what one process
trains, only rank 0 writes, and a SIGTERM stops both ranks at one step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.datasets import load_digits

from iocane.base.config import load_config
from iocane.base.layout import Layout
from iocane.data.prepared import prepare_data
from iocane.training.ranks import Ranks
from iocane.training.recipes import TrainingPasses, train_step
from models import ModelSpec, build_model
from tasks.warmup import run_warmup
from tests.helpers.pipeline_params import write_tiny_params
from tests.helpers.tiny_training import adversarial_recipe

# The stated tolerances.
# One step: two processes differ from one only in the order float32 sums are taken (the
# gradient average, convolutions over half the batch): rounding.
STEP_TOLERANCE = 1e-5
# A whole run: ReLU and max-pooling kinks and Linf sign steps turn a rounding difference into a
# different example now and then, and training amplifies it (measured: weights equal to 1e-6
# for a dozen steps, then apart by 1e-3), so runs agree in their figures, not their weights.
ACCURACY_TOLERANCE = 0.03

# Every recipe whose attack can start without noise (trades always starts from a little: drawn
# per shard, it differs from the one-process draw by design); ibp's bound is computed outside
# the DDP-wrapped passes, and its gradient must still be exchanged.
METHODS = ("natural", "pgd", "alp", "free", "ibp")


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    # 13 images: uneven shards (7 and 6) must still add up to the gradient of the batch mean
    images = torch.tensor(digits.images[:13] / 16.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.tensor(digits.target[:13])


def _one_step(method: str, ranks: Ranks) -> dict[str, torch.Tensor]:
    """The weights after one training step on the global batch: this process's share of it."""
    images, labels = _global_batch()
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    recipe = None
    if method != "natural":
        recipe = adversarial_recipe(
            norm="Linf",
            eps=0.1,
            step_size=0.05,
            steps=3,
            random_start=False,
            adv_weight=0.5,  # two passes (clean and adversarial) in one DDP forward
            eps_ramp_epochs=0,
            method=method,
            free_replays=2,
        )
    passes = TrainingPasses(model)
    if ranks.distributed:
        passes = torch.nn.parallel.DistributedDataParallel(passes)
    index = ranks.shard(torch.arange(len(labels)))
    free_delta = torch.zeros((len(index), *images.shape[1:]))
    weight = len(index) * ranks.world_size / len(labels)
    train_step(
        model,
        optimizer,
        images[index],
        labels[index],
        recipe=recipe,
        eps=0.1,
        seed=3,
        batch=0,
        free_delta=free_delta,
        passes=passes,
        weight=weight,
    )
    return {key: value.clone() for key, value in model.state_dict().items()}


def _rank(rank: int, world_size: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        weights = {method: _one_step(method, Ranks(rank, world_size)) for method in METHODS}
        if rank == 0:
            torch.save(weights, out)
    finally:
        dist.destroy_process_group()


def test_a_ddp_step_is_the_one_process_step_on_the_global_batch(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(out)), nprocs=2)
    distributed = torch.load(out, weights_only=True)
    for method in METHODS:
        alone = _one_step(method, Ranks())
        torch.manual_seed(0)
        start = build_model(ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=8))
        moved = max((alone[k] - start.state_dict()[k]).abs().max().item() for k in alone)
        apart = max((alone[k] - distributed[method][k]).abs().max().item() for k in alone)
        assert moved > 100 * STEP_TOLERANCE, method  # the step did change the weights
        assert apart < STEP_TOLERANCE, (method, apart)


def test_shards_split_every_global_batch_between_the_ranks() -> None:
    for world_size in (2, 3, 4):
        for size in (world_size * 2, 13, 64):
            batch = torch.randperm(1000)[:size]
            shards = [Ranks(rank, world_size).shard(batch) for rank in range(world_size)]
            assert torch.equal(torch.cat(shards), batch)  # disjoint, complete, in order
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.fixture(scope="module")
def warmed_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits project with its data prepared and its warmup trained (in this process)."""
    project = tmp_path_factory.mktemp("ddp") / "base"
    project.mkdir()
    params = write_tiny_params(
        project / "params.yaml",
        data={"limit_train": 0},
        train={"epochs": 3, "steps": 5, "eps_ramp_epochs": 1},
    )
    config, layout = load_config(str(params)), Layout(project)
    prepare_data(config, layout)
    run_warmup(config, layout)
    return project


def _copy_with_nproc(base: Path, target: Path, nproc: int) -> Path:
    shutil.copytree(base, target)
    params = target / "params.yaml"
    params.write_text(params.read_text().replace("nproc: 1", f"nproc: {nproc}"))
    assert f"nproc: {nproc}" in params.read_text()
    return target


def _train_stage(project: Path) -> subprocess.Popen:
    """The DVC stage command, as ``dvc repro`` runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "iocane.stages", "train"],
        cwd=project,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def _weights(project: Path) -> dict[str, torch.Tensor]:
    return torch.load(Layout(project).model_file("train"), weights_only=True)["state_dict"]


def _max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    return max((wa[key] - wb[key]).abs().max().item() for key in wa)


def _metrics(project: Path) -> dict:
    return json.loads(Layout(project).metrics_file("train").read_text())


@pytest.fixture(scope="module")
def one_and_two(warmed_project: Path) -> tuple[Path, Path]:
    one = _copy_with_nproc(warmed_project, warmed_project.parent / "one", 1)
    two = _copy_with_nproc(warmed_project, warmed_project.parent / "two", 2)
    for project in (one, two):
        code, output = _finish(_train_stage(project))
        assert code == 0, output
    return one, two


def test_two_processes_train_what_one_process_trains(one_and_two) -> None:
    one, two = one_and_two
    assert _metrics(one)["processes"] == 1 and _metrics(two)["processes"] == 2
    figures_one, figures_two = _metrics(one), _metrics(two)
    for key in ("train_clean_accuracy", "train_adv_accuracy", "val_clean_accuracy"):
        assert abs(figures_one[key] - figures_two[key]) <= ACCURACY_TOLERANCE, key
    assert _max_weight_difference(one, two) < 0.1  # close, not equal (see the tolerances)


def test_only_rank_zero_writes_and_every_rank_reports(one_and_two) -> None:
    _, two = one_and_two
    files = sorted(path.name for path in Layout(two).checkpoint_dir("train").iterdir())
    # train.keep_checkpoints' default, applied by rank 0 alone: the newest and the best epoch.
    best = f"epoch-{_metrics(two)['best_epoch']:04d}.pt"
    assert files == sorted({"best.pt", best, "epoch-0003.pt", "last.pt", "model.pt"})
    reports = [json.loads((two / ".iocane" / "ddp" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [report["error"] for report in reports] == [None, None]


@pytest.mark.fault
def test_sigterm_stops_both_ranks_at_one_step_and_the_rerun_resumes(
    warmed_project: Path, one_and_two, record_property
) -> None:
    _, uninterrupted = one_and_two
    project = _copy_with_nproc(warmed_project, warmed_project.parent / "stopped", 2)
    checkpoints = Layout(project).checkpoint_dir("train")
    stage = _train_stage(project)
    deadline = time.monotonic() + 240
    while not (checkpoints / "epoch-0001.pt").exists():
        assert stage.poll() is None and time.monotonic() < deadline, _finish(stage)[1]
        time.sleep(0.05)
    stage.send_signal(signal.SIGTERM)  # to the launcher only, as a scheduler would
    code, output = _finish(stage)
    record_property("faults_injected", 1)
    assert code == 128 + signal.SIGTERM, output
    stopped = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(stopped) == 1 and "stopped by SIGTERM" in stopped[0], output
    reports = [
        json.loads((project / ".iocane" / "ddp" / f"rank-{r}.json").read_text()) for r in (0, 1)
    ]
    assert {report["kind"] for report in reports} == {"Interrupted"}
    # both ranks stopped at the same point: the same message, step included
    assert reports[0]["error"] == reports[1]["error"], reports

    code, output = _finish(_train_stage(project))
    assert code == 0, output
    assert "resuming" in output
    # the same two processes, stopped and resumed: the same arithmetic, so the same weights
    assert _max_weight_difference(project, uninterrupted) < STEP_TOLERANCE
