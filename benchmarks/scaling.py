"""Adversarial-training throughput in 1 and N data-parallel processes (DDP through torchrun),
and how far apart the models of 1 and N processes end up.

Every configuration runs the ``train`` stage as ``dvc repro`` does (``python -m iocane.stages
train``), from the same prepared data and the same warmup weights, each in its own copy of the
project:

- ``1 process x T threads``: one process with all T cores (``OMP_NUM_THREADS=T``), the default;
- ``1 process x 1 thread``: the per-core reference;
- ``N processes x T/N threads``: ``train.nproc=N``, the same global batch.

Throughput is images trained per epoch over the median epoch time (the training steps, the
sharded validation attack and rank 0's checkpoint: what an epoch costs a user); the start-up
cost (torchrun, N interpreters importing torch, the process group) is reported apart. The
figures (validation clean and PGD accuracy of the selected epoch) and the largest weight
difference say how closely N processes reproduce one.

    .venv/bin/python benchmarks/scaling.py                     # Fashion-MNIST, 4,096 images
    .venv/bin/python benchmarks/scaling.py --set data.dataset=digits --set data.root=null \\
        --set data.limit_train=0 --set train.epochs=20 --set train.batch_size=64 --epochs 20
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from iocane.base.config import load_config
from iocane.base.layout import Layout
from iocane.data.prepared import prepare_data
from tasks.warmup import run_warmup

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
DEFAULTS = [
    "data.dataset=fashion_mnist",
    f"data.root={FASHION_ROOT}",
    "data.limit_train=4096",
    "model.name=small_cnn",
    "warmup.epochs=1",
    "train.batch_size=128",
    "train.steps=7",
    "train.step_size=0.035",
    "train.eps=0.1",
    "train.eps_ramp_epochs=0",
    "train.select=last",
]


def run_train_stage(project: Path, nproc: int, threads: int, epochs: int) -> dict:
    params = project / "params.yaml"
    document = yaml.safe_load(params.read_text())
    document["train"].update(nproc=nproc, epochs=epochs)
    params.write_text(yaml.safe_dump(document, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "iocane.stages", "train"],
        cwd=project,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    layout = Layout(project)
    with layout.history_file("train").open() as stream:
        epoch_seconds = [float(row["seconds"]) for row in csv.DictReader(stream)]
    metrics = json.loads(layout.metrics_file("train").read_text())
    return {
        "processes": nproc,
        "threads_per_process": threads,
        "epoch_seconds": epoch_seconds,
        "median_epoch_seconds": statistics.median(epoch_seconds),
        "startup_seconds": wall - sum(epoch_seconds),
        "val_clean_accuracy": metrics["val_clean_accuracy"],
        "val_adv_accuracy": metrics["val_adv_accuracy"],
    }


def weights(project: Path) -> dict[str, torch.Tensor]:
    return torch.load(Layout(project).model_file("train"), weights_only=True)["state_dict"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    overrides = [*DEFAULTS, *args.set]
    config = load_config(PROJECT_ROOT / "params.yaml", overrides)
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory) / "base"
        base.mkdir()
        (base / "params.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        layout = Layout(base)
        prepare_data(config, layout)
        run_warmup(config, layout)
        n_train = int(json.loads(layout.prepared_meta.read_text())["counts"]["train"])
        plans = [(1, cores), (1, 1)] + [
            (n, max(1, cores // n)) for n in range(2, args.max_processes + 1)
        ]
        runs = []
        for nproc, threads in plans:
            project = Path(directory) / f"p{nproc}-t{threads}"
            shutil.copytree(base, project)
            result = run_train_stage(project, nproc, threads, args.epochs)
            result["images_per_second"] = n_train / result["median_epoch_seconds"]
            result["project"] = project
            runs.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "project"}), flush=True)
        reference = runs[0]
        theirs = weights(reference["project"])
        for run in runs:
            run["speed_vs_one_process_all_cores"] = (
                run["images_per_second"] / reference["images_per_second"]
            )
            ours = weights(run["project"])
            run["max_weight_difference_vs_one_process"] = max(
                (ours[k] - theirs[k]).abs().max().item() for k in ours
            )
        for run in runs:
            del run["project"]
    report = {
        "benchmark": "scaling",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": cores,
            "torch": torch.__version__,
            "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
        },
        "dataset": config.data.dataset,
        "train_images": n_train,
        "model": config.model.name,
        "batch_size": config.train.batch_size,
        "pgd_steps": config.train.steps,
        "epochs": args.epochs,
        "overrides": overrides,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scaling-{config.data.dataset}-{report['date']}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
