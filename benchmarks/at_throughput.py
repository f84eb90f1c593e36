"""Images per second of PGD-k adversarial training, measured fairly: iocane's trainer, the plain
PyTorch loop an engineer would write, and IBM ART's ``AdversarialTrainerMadryPGD``; and the
floating-point rate each reaches beside this machine's measured peak for the same work.

Fair means:

- each trainer times its epoch in a fresh process of its own (``at_throughput_worker.py``),
  under the same subnormal mode (``--subnormals``, flushing by default, which any loop can set
  with ``torch.set_flush_denormal``) and the same torch thread count (``--threads``), both set
  before torch starts a thread. Sharing one process let iocane's mode leak into the others'
  worker threads (issue 30). Under ``--subnormals ieee`` iocane's ``fit`` still flushes the
  thread that calls it, as it always does, and torch's pool threads do not;
- all three train the same model from the same initial weights on the same images (prepared
  once by iocane's ``prepare_data``), with the same batch size, eps, step size, PGD steps, one
  random start and pure adversarial loss (``train.adv_weight=1``, the only mix ART's trainer
  offers), SGD with the same lr, momentum and weight decay;
- each process first trains on ``--warmup-batches`` batches, untimed, then times a whole epoch;
- rounds are interleaved, the order rotating (A B C, B C A, C A B, ...), so a change in the
  machine's load spreads over all three; the figures are the medians over ``--rounds``, with
  the spread, and the ratios iocane/plain and iocane/ART in each round and their median.

What each times: ``iocane`` is ``iocane.training.loop.fit`` for one epoch, its clean validation
pass (256 images) and its checkpoint included; ``plain`` a shuffling ``DataLoader``, PGD with
``torch.autograd.grad`` for the input's gradient, ``F.cross_entropy``, ``SGD.step``; ``art``
``AdversarialTrainerMadryPGD(PyTorchClassifier(...)).fit(x, y)``. The FLOP count and the peaks
are ``at_throughput_peak.py``'s, measured in a process of their own too.

    .venv/bin/python benchmarks/at_throughput.py --quick   # a smoke test (minutes when quiet)
    .venv/bin/python benchmarks/at_throughput.py --out benchmarks/results   # the full run

Prints one JSON document; with ``--out DIR`` also writes ``DIR/at_throughput-fair-<date>.json``.
ART comes with ``pip install -e ".[bench]"``; ``--trainers iocane,plain`` runs without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from iocane.base.config import load_config
from iocane.base.files import write_atomic
from iocane.base.layout import Layout
from iocane.data.prepared import load_prepared, prepare_data
from models import build_model

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "at_throughput_worker.py"
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
DEFAULTS = [
    "data.dataset=fashion_mnist",
    f"data.root={FASHION_ROOT}",
    "model.name=small_cnn",
    "train.batch_size=128",
    "train.steps=7",
    "train.eps=0.1",
    "train.step_size=0.025",
    "train.adv_weight=1.0",
    "train.eps_ramp_epochs=0",
    "train.method=pgd",
    "train.random_start=true",
    "runtime.precision=fp32",
    "runtime.compile=false",
]
# The full run: five rounds of three epochs, data.limit_train 2,560 of which the training split
# is 2,304 images (18 batches); estimated at about 6 minutes on a quiet 2-core machine. --quick is
# a smoke test.
FULL = {"limit_train": 2560, "rounds": 5, "warmup_batches": 3}
QUICK = {"limit_train": 512, "rounds": 2, "warmup_batches": 1}


def run_worker(job_dir: Path, task: str, threads: int, subnormals: str) -> dict:
    """One task in a fresh process; its last stdout line is its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, str(WORKER), str(job_dir), task, str(threads), subnormals]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"at_throughput: the {task} worker failed ({done.returncode}):\n{done.stderr[-4000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_job(job_dir: Path, overrides: list[str], warmup_batches: int, quick: bool) -> dict:
    """The prepared data, the initial weights and the settings every worker reads."""
    config = load_config(PROJECT_ROOT / "params.yaml", overrides)
    prepare_data(config, Layout(job_dir))
    data = load_prepared(Layout(job_dir))
    torch.manual_seed(config.seed)
    torch.save(build_model(data.model_spec(config.model)).state_dict(), job_dir / "initial.pt")
    job = {
        "overrides": overrides,
        "warmup_batches": warmup_batches,
        "quick": quick,
        "round_seed": config.seed,
    }
    (job_dir / "job.json").write_text(json.dumps(job))
    train = config.train
    return {
        "dataset": config.data.dataset,
        "train_images": len(data.train),
        "model": config.model.name,
        "batch_size": train.batch_size,
        "pgd_steps": train.steps,
        "eps": train.eps,
        "step_size": train.step_size,
        "lr": train.lr,
        "runtime": config.to_dict()["runtime"],
    }


def rounds_of(trainers: list[str], rounds: int) -> list[list[str]]:
    """The order of each round: the list rotated by one more each round."""
    n = len(trainers)
    return [trainers[r % n :] + trainers[: r % n] for r in range(rounds)]


def spread(values: list[float]) -> dict:
    middle = statistics.median(values)
    return {
        "median": round(middle, 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "relative_spread": round((max(values) - min(values)) / middle, 3),
    }


def best_peak(peaks: list[dict]) -> dict:
    """The FLOP counts (the same in each) with the higher of each measured peak."""
    best = dict(peaks[0])
    best["matmul_peak_gflops"] = max(p["matmul_peak_gflops"] for p in peaks)
    best["conv_peak"] = max((p["conv_peak"] for p in peaks), key=lambda conv: conv["gflops"])
    best["measured"] = [
        {
            "matmul_gflops": round(p["matmul_peak_gflops"], 1),
            "conv_gflops": round(p["conv_peak"]["gflops"], 1),
        }
        for p in peaks
    ]
    return best


def summarise(runs: list[dict], trainers: list[str], peak: dict) -> dict:
    """Medians, spreads, ratios per round and their medians, GFLOP/s and shares of the peaks."""
    rate = {
        name: [r["images_per_second"] for r in runs if r["trainer"] == name] for name in trainers
    }
    summary: dict = {
        "images_per_second": {},
        "images_per_second_spread": {},
        "gflops": {},
        "share_of_matmul_peak": {},
        "share_of_conv_peak": {},
    }
    for name in trainers:
        median = statistics.median(rate[name])
        gflops = median * peak["flops_per_image"] / 1e9
        summary["images_per_second"][name] = round(median, 1)
        summary["images_per_second_spread"][name] = spread(rate[name])
        summary["gflops"][name] = round(gflops, 1)
        summary["share_of_matmul_peak"][name] = round(gflops / peak["matmul_peak_gflops"], 3)
        summary["share_of_conv_peak"][name] = round(gflops / peak["conv_peak"]["gflops"], 3)
    # Every thread of every run flushed (1.0) or none did (0.0): the mode was the same.
    summary["subnormals_flushed_share"] = {
        name: min(r["subnormals_flushed_share_after"] for r in runs if r["trainer"] == name)
        for name in trainers
    }
    for other in ("plain", "art", "textbook"):
        if "iocane" in trainers and other in trainers:
            per_round = [a / b for a, b in zip(rate["iocane"], rate[other], strict=True)]
            summary[f"ratio_iocane_over_{other}_per_round"] = [round(r, 3) for r in per_round]
            summary[f"ratio_iocane_over_{other}"] = round(statistics.median(per_round), 3)
    summary["targets"] = {
        "iocane_at_least_1_3x_plain": summary.get("ratio_iocane_over_plain", 0) >= 1.3,
        "iocane_at_least_1_5x_art": summary.get("ratio_iocane_over_art", 0) >= 1.5,
    }
    return summary


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 512 images, 2 rounds")
    parser.add_argument("--rounds", type=int, help=f"default {FULL['rounds']}")
    parser.add_argument(
        "--limit-train", type=int, help=f"data.limit_train, default {FULL['limit_train']}"
    )
    parser.add_argument("--warmup-batches", type=int, help=f"default {FULL['warmup_batches']}")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--subnormals", choices=("flush", "ieee"), default="flush")
    parser.add_argument("--trainers", default="iocane,plain,art")
    parser.add_argument("--out", type=Path, help="a folder: writes at_throughput-fair-<date>.json")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = set(args.trainers.split(",")) - {"iocane", "plain", "art", "textbook"}
    if unknown or args.rounds < 1 or args.threads < 1:
        parser.error(
            f"--trainers takes iocane, plain, art, textbook (got {sorted(unknown)}); "
            "--rounds and --threads at least 1"
        )
    if "art" in args.trainers.split(",") and importlib.util.find_spec("art") is None:
        parser.error(
            'IBM ART is not installed: pip install -e ".[bench]", or --trainers iocane,plain'
        )
    return args


def main() -> None:
    args = parse_args()
    trainers = args.trainers.split(",")
    data_defaults = DEFAULTS if FASHION_ROOT.exists() else ["data.dataset=digits", *DEFAULTS[2:]]
    overrides = [*data_defaults, f"data.limit_train={args.limit_train}", *args.set]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        job_dir = Path(directory)
        setup = make_job(job_dir, overrides, args.warmup_batches, args.quick)
        peaks = [run_worker(job_dir, "peak", args.threads, args.subnormals)]
        runs = []
        for number, order in enumerate(rounds_of(trainers, args.rounds)):
            for name in order:
                result = run_worker(job_dir, name, args.threads, args.subnormals)
                runs.append({"round": number, **result})
                print(
                    f"round {number + 1}/{args.rounds} {name}: "
                    f"{result['images_per_second']:.1f} images/s",
                    file=sys.stderr,
                )
        # Again after the rounds: the best of the two is the peak (load only slows it down).
        peaks.append(run_worker(job_dir, "peak", args.threads, args.subnormals))
    peak = best_peak(peaks)
    report = {
        "benchmark": "at_throughput-fair",
        "date": time.strftime("%Y-%m-%d"),
        **setup,
        "device": "cpu",
        "torch_threads": args.threads,
        "subnormals": args.subnormals,
        "rounds": args.rounds,
        "warmup_batches": args.warmup_batches,
        "quick": args.quick,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        **summarise(runs, trainers, peak),
        "flops_per_image": round(peak["flops_per_image"]),
        "flops_per_image_iocane_step": round(peak["flops_per_image_iocane_step"]),
        "matmul_peak_gflops": round(peak["matmul_peak_gflops"], 1),
        "matmul_size": peak["matmul_size"],
        "conv_peak_gflops": round(peak["conv_peak"]["gflops"], 1),
        "conv_peak": peak["conv_peak"],
        "peaks_measured_before_and_after": peak["measured"],
        "runs": runs,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"at_throughput-fair-{report['date']}.json"
        write_atomic(path, lambda stream: stream.write((text + "\n").encode()))


if __name__ == "__main__":
    main()
