"""The default pipeline on digits, stage by stage: wall time, cost ratios and the figures.

Runs the same plain functions as the DVC stages and the Prefect tasks, without Prefect or
MLflow, in a temporary directory, and prints one JSON document. Times on a shared machine are
noisy; the ratios (adversarial epoch over natural epoch) compare figures measured in one run.

    .venv/bin/python benchmarks/pipeline_digits.py [--set train.epochs=5 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from iocane.base.config import load_config
from iocane.base.files import read_json
from iocane.base.layout import Layout
from iocane.base.logs import setup_console_logging
from iocane.data.prepared import prepare_data
from tasks.evaluate import run_evaluate
from tasks.gate import run_gate
from tasks.train import run_train
from tasks.warmup import run_warmup

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _epoch_seconds(layout: Layout, stage: str) -> float:
    import csv

    with layout.history_file(stage).open() as stream:
        return statistics.median(float(row["seconds"]) for row in csv.DictReader(stream))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    setup_console_logging()
    config = load_config(PROJECT_ROOT / "params.yaml", args.set)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as directory:
        layout = Layout(Path(directory))
        for name, stage in (
            ("prepare", prepare_data),
            ("warmup", run_warmup),
            ("train", run_train),
            ("evaluate", run_evaluate),
            ("gate", run_gate),
        ):
            started = time.perf_counter()
            stage(config, layout)
            seconds[name] = round(time.perf_counter() - started, 2)
        evaluation = read_json(layout.metrics_file("evaluate"))
        natural_epoch = _epoch_seconds(layout, "warmup")
        adversarial_epoch = _epoch_seconds(layout, "train")
        verdict = read_json(layout.metrics_file("gate"))
    print(
        json.dumps(
            {
                "benchmark": "pipeline_digits",
                "overrides": args.set,
                "seconds": seconds,
                "total_seconds": round(sum(seconds.values()), 2),
                "median_epoch_seconds": {
                    "natural": round(natural_epoch, 3),
                    "adversarial": round(adversarial_epoch, 3),
                },
                # PGD-k costs about k + 1 forward/backward passes per batch, plus validation.
                "adversarial_over_natural_epoch": round(adversarial_epoch / natural_epoch, 2),
                "pgd_steps": config.train.steps,
                "clean_accuracy": evaluation["clean_accuracy"],
                "robust_accuracy": evaluation["robust_accuracy"],
                "attacks": evaluation["attacks"],
                "natural": evaluation["natural"],
                "flags": evaluation["flags"],
                "gate_passed": verdict["passed"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
