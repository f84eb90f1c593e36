"""Robustness per training budget: iocane's planner (``iocane sweep``) against a plain loop.

On Fashion-MNIST (Debian's ``dataset-fashion-mnist``, ``configs/fashion_mnist.yaml``) at Linf eps
0.1, for each training budget (``--budgets``, minutes; 2.5, 5, 10 and 20 by default):

- **iocane:** the real CLI, ``iocane sweep``, one sweep per configuration of ``CONFIGS`` (a
  network, a recipe and its settings; ``--configs`` picks), each crossing the network at the
  widths of ``WIDTHS`` with the budgets (``sweep.budget_minutes``: the train stage fills each
  with epochs). The points share the natural warmups of their width, trained for
  ``warmup.epochs`` and not counted in the budget (their wall time is reported beside each
  point).
- **the plain loop** (``benchmarks/plain_loop.py``), in the same run, both loss mixes: pure
  adversarial and the design note's 0.5/0.5, as many whole epochs as the budget allows.

How each iocane point spent its budget (issue 29, item 5): ``budget_spent_training``, the share
of the budget in its epochs (steps and per-epoch validation, from ``metrics/train.json``), and
``budget_spent_with_calibration``, with the calibration before them; the rest went to checkpoint
writes and to what the margin kept in reserve. ``budget_share_least`` gives the smallest of each.

Every model is judged by the same suite (``evaluate.preset: standard``, per-sample worst case)
on the same test images (``--n-samples``, 1,000; the params' seed picks them): the iocane points
inside their sweep, the plain loop's state_dicts by ``iocane evaluate --model-file``. Per budget,
the best iocane point is the sweep's ranking rule (``iocane.pipeline.sweep.ranking.rank``): the most
robust in the worst case among the points with no trust flag and a clean accuracy at least the
plain loop's (pure adversarial variant; ``--min-clean`` sets a fixed floor instead). Wall and CPU
time of training: the sweep's own (``train_seconds``, ``train_cpu_seconds``), and the plain
loop's (``time.process_time`` in its process).

Prints one JSON document, writes ``benchmarks/results/budget-fashion_mnist-<date>.json`` (the
smoke run writes ``budget-smoke-<date>.json``; the file is rewritten after every piece, the
plain-loop references first, with ``complete: false`` until the end), and a Markdown table on
stderr. Hours at full
size; ``--smoke`` is a tiny end-to-end check (minutes):

    .venv/bin/python benchmarks/budget.py [--budgets 2.5,5,10,20] [--configs pgd3,free,nfgsm]
    .venv/bin/python benchmarks/budget.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from iocane.pipeline.sweep.grid import warmup_directory
from iocane.pipeline.sweep.ranking import rank

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS = PROJECT_ROOT / "configs" / "fashion_mnist.yaml"
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
BUDGETS = (2.5, 5.0, 10.0, 20.0)
WIDTHS = (2, 4, 8, 16)
# The configurations the planner searches: a name and its params overrides (a list, so that a
# recipe or schedule added later is one more line here). Each runs as one sweep over the widths
# and budgets.
ADAM_PGD5 = [
    "train.method=pgd",
    "train.steps=5",
    "train.step_size=0.05",  # 2.5 * eps / 5
    "train.optimizer=adam",
    "train.lr=0.001",
]
ADAM_NO_DECAY = ["train.optimizer=adam", "train.lr=0.001", "train.weight_decay=0.0"]
MADRY = "model.name=madry_cnn"
CONFIGS: dict[str, list[str]] = {
    "pgd3": [MADRY, "train.method=pgd", "train.steps=3", "train.step_size=0.0833"],  # 2.5eps/3
    "free": [MADRY, "train.method=free"],
    "nfgsm": [MADRY, "train.method=nfgsm"],  # de Jorge et al. 2022 (issue 19, item 2)
    # The plain loop's optimiser (Adam at 1e-3) with iocane's recipes: PGD-10 as the plain loop
    # trains, and PGD-5 with a larger step (twice the epochs in the same budget).
    "pgd10-adam": [MADRY, "train.method=pgd", "train.optimizer=adam", "train.lr=0.001"],
    "pgd5-adam": [MADRY, *ADAM_PGD5],
    # The same recipes on the plain loop's own network (compact_cnn at width 8 is it), so that
    # the comparison is of training, not of architecture. compact-pgd5-adam, the best at 10
    # minutes, is what configs/fashion_mnist.yaml ships (with warmup.epochs=1).
    "compact-pgd5-adam": ["model.name=compact_cnn", *ADAM_PGD5],
    "compact-pgd3-adam": [
        "model.name=compact_cnn",
        "train.method=pgd",
        "train.steps=3",
        "train.step_size=0.0833",  # 2.5 * eps / 3
        "train.optimizer=adam",
        "train.lr=0.001",
    ],
    # The plain loop's own recipe (PGD-10, Adam at 1e-3, no weight decay) on its network, with
    # iocane's cosine schedule and best-epoch selection; and TRADES (Zhang et al. 2019) on it.
    "compact-pgd10-adam": ["model.name=compact_cnn", *ADAM_NO_DECAY, "train.method=pgd"],
    "compact-trades-adam": [
        "model.name=compact_cnn",
        *ADAM_NO_DECAY,
        "train.method=trades",
        "train.trades_beta=3.0",
    ],
    # e.g. "nfgsm-onecycle": ["train.method=nfgsm", "train.lr_schedule=onecycle"],
}
# Every configuration: the threat model, and lr 0.01 (at 0.05 madry_cnn at width 16
# stays at chance through its natural epoch; issue 19).
DEFAULTS = ["train.eps=0.1", "train.lr=0.01", "warmup.lr=0.01", "evaluate.preset=standard"]
PLAIN_VARIANTS = {"adversarial": 1.0, "mixed": 0.5}  # the loss's weight on adversarial examples
PLAIN_FACTORY = "benchmarks.plain_loop:design_note_cnn"
SMOKE = {"budgets": "0.2", "configs": "free", "widths": "2", "n_samples": 100, "limit_train": 2000}
SMOKE_SETS = ["warmup.epochs=1", "train.epochs=1"]  # for a train stage that ignores the budget


def _run(command: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    """A subprocess's stdout; its stderr goes to ours, and a failure stops the benchmark."""
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    result = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    if result.returncode:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}")
    return result.stdout


def scratch_environment(scratch: Path) -> dict[str, str]:
    """The commands' environment: this checkout's packages, and MLflow and Prefect state kept in
    the scratch folder (nothing reaches the user's registry)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlflow.db'}",
        "PREFECT_HOME": str(scratch / ".prefect"),
    }


def _iocane(*args: str) -> list[str]:
    return [sys.executable, "-m", "iocane.cli", *args, "--params", str(PARAMS)]


def _sets(overrides: list[str]) -> list[str]:
    return [item for override in overrides for item in ("--set", override)]


def budget_spent(training: dict) -> dict:
    """How a train stage spent its time budget (its ``metrics/train.json``): the share of the
    budget its epochs took, and with the calibration; empty without a budget."""
    budget_seconds = (training.get("budget_minutes") or 0) * 60
    if not budget_seconds or "budget_training_seconds" not in training:
        return {}
    epochs = training["budget_training_seconds"]
    return {
        "budget_spent_training": round(epochs / budget_seconds, 3),
        "budget_spent_with_calibration": round(
            (epochs + training["calibration_seconds"]) / budget_seconds, 3
        ),
        "budget_decided_epochs": training["budget_epochs"],
        "last_epoch_steps": training.get("last_epoch_steps"),
    }


def run_sweep(name: str, *, scratch: Path, env: dict, common: list[str], args) -> list[dict]:
    """One ``iocane sweep`` of configuration `name` over the widths and budgets: its rows, each
    with the configuration's name and its warmup's wall seconds."""
    overrides = [
        *common,
        *CONFIGS[name],
        f"sweep.width=[{args.widths}]",
        f"sweep.budget_minutes=[{args.budgets}]",
    ]
    summary = json.loads(_run([*_iocane("sweep"), *_sets(overrides)], cwd=scratch, env=env))
    rows = []
    for row in summary["points"]:
        warmup = Path(summary["directory"]) / warmup_directory(
            (row["model"], row["width"], row["seed"])
        )
        metrics = json.loads((warmup / "metrics" / "warmup.json").read_text())
        # Where the evaluation's time went (issue 19 item 7), before the scratch folder goes.
        point = Path(summary["directory"]) / row["point"] / "metrics" / "evaluate.json"
        evaluation = json.loads(point.read_text())
        training = json.loads(point.with_name("train.json").read_text())
        rows.append(
            {
                "config": name,
                **row,
                **budget_spent(training),
                "warmup_seconds": round(metrics["seconds"], 1),
                "evaluate_seconds": evaluation.get("seconds"),
                "seconds_per_attack": evaluation.get("seconds_per_attack"),
            }
        )
    return rows


def run_plain(
    budget: float, variant: str, *, scratch: Path, env: dict, common: list[str], args
) -> dict:
    """The plain loop for `budget` minutes, then the suite on its model."""
    state = scratch / f"plain-{variant}-{budget:g}.pt"
    command = [sys.executable, str(PROJECT_ROOT / "benchmarks" / "plain_loop.py")]
    command += ["--budget-minutes", str(budget), "--adv-weight", str(PLAIN_VARIANTS[variant])]
    command += ["--out", str(state), "--root", str(FASHION_ROOT)]
    command += ["--limit-train", str(args.limit_train)] if args.limit_train else []
    trained = json.loads(_run(command, cwd=scratch, env=env))
    overrides = [
        *common,
        f"model.name={PLAIN_FACTORY}",
        "model.width=0",
        "model.mean=[0.0]",
        "model.std=[1.0]",
    ]
    evaluate = _iocane("evaluate", "--model-file", str(state))
    metrics = json.loads(_run([*evaluate, *_sets(overrides)], cwd=scratch, env=env))
    return {
        "evaluate_seconds": metrics.get("seconds"),
        "seconds_per_attack": metrics.get("seconds_per_attack"),
        "clean_accuracy": metrics["clean_accuracy"],
        "robust_accuracy": metrics["robust_accuracy"],
        "trust_flags": len(metrics.get("flags") or []),
        "epochs": trained["epochs"],
        "train_seconds": trained["wall_seconds"],
        "train_cpu_seconds": trained["cpu_seconds"],
        "overran_budget": trained["overran_budget"],
    }


def _side_by_side(budget: float, points: list[dict], plain: dict, floor: float | None) -> dict:
    """One budget: the best iocane point by the sweep's ranking rule, and the plain loop."""
    floor = plain["adversarial"]["clean_accuracy"] if floor is None else floor
    here = [dict(row) for row in points if row["budget_minutes"] == budget]
    ranked = rank(here, floor)
    keys = ("config", "point", "width", "epochs", "clean_accuracy", "robust_accuracy")
    keys += ("trust_flags", "train_seconds", "train_cpu_seconds", "warmup_seconds")
    keys += ("budget_spent_training", "budget_spent_with_calibration")
    best = ranked[0] if ranked and ranked[0]["rank"] == 1 else None
    return {
        "budget_minutes": budget,
        "min_clean_accuracy": floor,
        "iocane_best": {key: best.get(key) for key in keys} if best else None,
        "iocane_points": len(here),
        "iocane_most_robust_unranked": (
            None
            if best or not ranked
            else {key: ranked[0].get(key) for key in (*keys, "unranked_because")}
        ),
        "plain_loop": plain,
    }


def table(report: dict) -> str:
    lines = [
        "| budget (min) | model | clean | robust (worst case) | epochs "
        "| train wall s | train CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in report["budgets"]:
        budget, best = entry["budget_minutes"], entry["iocane_best"]
        rows = [(f"iocane {best['point']}" if best else "iocane: no point above the floor", best)]
        rows += [(f"plain loop, {name}", figures) for name, figures in entry["plain_loop"].items()]
        for label, figures in rows:
            if figures is None:
                lines.append(f"| {budget:g} | {label} | | | | | |")
                continue
            lines.append(
                f"| {budget:g} | {label} | {figures['clean_accuracy']:.3f} "
                f"| {figures['robust_accuracy']:.3f} | {figures['epochs']} "
                f"| {figures['train_seconds']} | {figures['train_cpu_seconds']} |"
            )
    return "\n".join(lines) + "\n"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS), help="minutes")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"of: {', '.join(CONFIGS)}")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="network widths")
    parser.add_argument("--n-samples", type=int, default=1000, help="test images attacked")
    parser.add_argument("--limit-train", type=int, default=None, help="training images; all")
    parser.add_argument("--min-clean", type=float, default=None, help="fixed clean floor")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--smoke", action="store_true", help="tiny: minutes, end to end")
    parser.add_argument("--plain", default=",".join(PLAIN_VARIANTS), help="loss mixes run")
    parser.add_argument("--suffix", default="", help="of the results file's name: -adam")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.set = [*SMOKE_SETS, *args.set]
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"--configs: unknown {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    return args


def _report(args, common: list[str], budgets: list[float], points, plain, started) -> dict:
    """The JSON document, of what has run so far (``complete`` says whether all of it has)."""
    variants = args.plain.split(",")
    done = [budget for budget in budgets if len(plain.get(budget, {})) == len(variants)]
    return {
        "benchmark": "budget",
        "dataset": "fashion_mnist",
        "threat": "Linf eps 0.1",
        "date": time.strftime("%Y-%m-%d"),
        "smoke": args.smoke,
        "complete": False,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
        "settings": {
            "n_samples": args.n_samples,
            "limit_train": args.limit_train,
            "configs": {name: CONFIGS[name] for name in args.configs.split(",")},
            "widths": args.widths,
            "overrides": common,
            "warmup_counted_in_budget": False,
        },
        "budgets": [
            _side_by_side(budget, points, plain[budget], args.min_clean) for budget in done
        ],
        "plain_loop": {f"{budget:g}": figures for budget, figures in plain.items()},
        "points": points,
        "budget_share_least": {
            key: min((row[key] for row in points if key in row), default=None)
            for key in ("budget_spent_training", "budget_spent_with_calibration")
        },
        "minutes": round((time.time() - started) / 60, 1),
    }


def main() -> None:
    args = _arguments()
    budgets = [float(budget) for budget in args.budgets.split(",")]
    common = [*DEFAULTS, f"data.root={FASHION_ROOT}", f"evaluate.n_samples={args.n_samples}"]
    common += [f"data.limit_train={args.limit_train}"] if args.limit_train else []
    common += args.set
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "budget-smoke" if args.smoke else "budget-fashion_mnist"
    path = args.out / f"{stem}-{time.strftime('%Y-%m-%d')}{args.suffix}.json"
    points: list[dict] = []
    plain: dict[float, dict] = {}

    def save(complete: bool = False) -> dict:
        # After every piece: hours of work are not lost to one failure at the end.
        report = {**_report(args, common, budgets, points, plain, started), "complete": complete}
        path.write_text(json.dumps(report, indent=2) + "\n")
        return report

    with tempfile.TemporaryDirectory(prefix="iocane-budget-") as directory:
        scratch = Path(directory)
        env = scratch_environment(scratch)
        # The reference first: every iocane point is judged against it.
        for budget in budgets:
            for variant in args.plain.split(","):
                plain.setdefault(budget, {})[variant] = run_plain(
                    budget, variant, scratch=scratch, env=env, common=common, args=args
                )
                save()
        for name in args.configs.split(","):
            points += run_sweep(name, scratch=scratch, env=env, common=common, args=args)
            save()
    report = save(complete=True)
    print(json.dumps(report, indent=2))
    print(table(report), file=sys.stderr)


if __name__ == "__main__":
    main()
