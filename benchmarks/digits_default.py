"""The digits default for its budget: five minutes of ``iocane run``, end to end (issue 19).

``params.yaml`` (scikit-learn's 8x8 digits, Linf eps 0.1) is what the README runs first, so its
budget is the whole run, not only training: prepare, the natural warmup, adversarial training,
the ``standard`` suite on the hardened and the natural model, the gate and the registry.

1. **The planner** (``iocane sweep``, one sweep per entry of ``SWEEPS``) fills a training budget
   (``--train-minutes``, 3 by default: the rest of the run takes about a minute and a half)
   with each candidate, and ranks them as the sweep does (worst-case robust accuracy among the
   points at least ``gate.min_clean_accuracy`` clean with no trust flag). The current default,
   ``params.yaml`` as it is (``train.epochs``, no budget), runs in the same sweep as the
   reference.
2. **End to end:** ``iocane run`` of the best point, with the epochs its budget decided set as
   ``train.epochs`` (a default must give the same figures on every machine), and of the current
   default, timed from the command's start to its exit.

Prints one JSON document and writes ``benchmarks/results/digits_default-<date>.json``. About half
an hour on 2 CPU cores; on a quiet machine only (other work slows PyTorch's threads):

    .venv/bin/python benchmarks/digits_default.py [--train-minutes 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.budget import _run, _sets, scratch_environment  # noqa: E402
from iocane.base.errors import GATE_FAILED  # noqa: E402
from iocane.pipeline.sweep.ranking import rank  # noqa: E402

PARAMS = PROJECT_ROOT / "params.yaml"
MIN_CLEAN = 0.95  # params.yaml's gate.min_clean_accuracy
# The candidates: one sweep each (an optimiser is not a sweep axis). small_cnn is the default's
# network (width 32); compact_cnn at width 8 is the Fashion-MNIST default's (32/64/256), with
# its recipe (PGD-5, Adam at 1e-3).
SWEEPS: dict[str, list[str]] = {
    "small_cnn-sgd": [
        "sweep.width=[32, 64]",
        "sweep.steps=[5, 10]",
    ],
    "compact_cnn-adam": [
        "model.name=compact_cnn",
        "sweep.width=[8]",
        "sweep.steps=[5]",
        "train.optimizer=adam",
        "train.lr=0.001",
    ],
}


def _iocane(*args: str) -> list[str]:
    return [sys.executable, "-m", "iocane.cli", *args, "--params", str(PARAMS)]


def sweep(name: str, overrides: list[str], *, scratch: Path, env: dict) -> list[dict]:
    summary = json.loads(_run([*_iocane("sweep"), *_sets(overrides)], cwd=scratch, env=env))
    return [{"sweep": name, "overrides": overrides, **row} for row in summary["points"]]


def end_to_end(overrides: list[str], *, scratch: Path, env: dict) -> dict:
    """``iocane run`` in a project of its own: its wall seconds and figures."""
    project = scratch / f"run-{len(list(scratch.glob('run-*')))}"
    project.mkdir()
    command = [*_iocane("run"), *_sets(overrides)]
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=project, env=env, stdout=subprocess.PIPE, text=True)
    seconds = round(time.perf_counter() - started, 1)
    if finished.returncode not in (0, GATE_FAILED):  # a failed gate is a figure, not a crash
        raise SystemExit(f"failed ({finished.returncode}): {' '.join(command)}")
    result = json.loads(finished.stdout)
    keys = ("gate", "reasons", "clean_accuracy", "robust_accuracy", "version", "alias")
    return {"overrides": overrides, "seconds": seconds, **{key: result.get(key) for key in keys}}


def _point_settings(row: dict) -> list[str]:
    """The best point as params overrides, with its decided epochs instead of its budget."""
    settings = [item for item in row["overrides"] if not item.startswith("sweep.")]
    settings += [f"model.width={row['width']}", f"train.steps={row['steps']}"]
    settings += [f"train.step_size={2.5 * 0.1 / row['steps']:.4g}"]
    return [*settings, "train.budget_minutes=0", f"train.epochs={row['epochs']}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-minutes", type=float, default=3.0, help="the training budget")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="iocane-digits-") as directory:
        scratch = Path(directory)
        env = scratch_environment(scratch)
        budget = f"sweep.budget_minutes=[{args.train_minutes:g}]"
        rows = sweep("current-default", ["sweep.budget_minutes=[0]"], scratch=scratch, env=env)
        for name, overrides in SWEEPS.items():
            rows += sweep(name, [*overrides, budget], scratch=scratch, env=env)
        ranked = rank(rows, MIN_CLEAN)
        best = ranked[0] if ranked and ranked[0]["rank"] == 1 else None
        keys = ("sweep", "point", "model", "width", "steps", "budget_minutes", "epochs")
        keys += ("clean_accuracy", "robust_accuracy", "trust_flags", "train_seconds")
        keys += ("train_cpu_seconds", "rank", "unranked_because")
        report = {
            "benchmark": "digits_default",
            "dataset": "digits",
            "threat": "Linf eps 0.1",
            "date": time.strftime("%Y-%m-%d"),
            "complete": False,
            "train_minutes": args.train_minutes,
            "min_clean_accuracy": MIN_CLEAN,
            "points": [{key: row.get(key) for key in keys} for row in ranked],
            "best": best and best["point"],
            "end_to_end": {},
        }
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"digits_default-{time.strftime('%Y-%m-%d')}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")  # the sweep's figures, first
        runs = report["end_to_end"]
        runs["current_default"] = end_to_end([], scratch=scratch, env=env)
        if best is not None:
            runs["best"] = end_to_end(_point_settings(best), scratch=scratch, env=env)
    report.update(complete=True, minutes=round((time.time() - started) / 60, 1))
    text = json.dumps(report, indent=2) + "\n"
    path.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
