"""Training recipes at an equal CPU-time budget: clean and worst-case robust accuracy.

On Fashion-MNIST (Debian's ``dataset-fashion-mnist``) at Linf eps 0.1, every recipe starts from
the same natural warmup and then trains for the same budget of CPU time (``--budget``, process
CPU seconds: robust to other jobs on the machine, which wall time is not):

- ``natural``: clean training continues (no validation attack; the last epoch is kept);
- ``pgd`` (Madry, PGD-10), ``trades`` (beta 6, 10 KL steps), ``fgsm_rs`` (Wong et al.) and
  ``free`` (m = 4): iocane's recipes, each with the per-epoch validation PGD that selects the
  best epoch and watches for catastrophic overfitting; that validation counts in the budget.

``--recipes`` also takes (not in the default set, so the recorded run stays as it was):
``nfgsm`` (de Jorge et al. 2022), ``pgd3``..``pgd5`` (few-step PGD, step 2.5 eps / steps), and
any of them with ``+onecycle`` (Wong et al.'s per-batch one-cycle schedule, peaking at
``train.lr``) instead of ``train.lr_schedule``: ``--recipes pgd3+onecycle,nfgsm+onecycle``.

A recipe's number of epochs is the budget divided by the CPU time of one real epoch of it
(``fit`` for one epoch from the warmup weights, validation and checkpoint included; a first
version that extrapolated from a few batches underestimated PGD's epochs by a third). The CPU
time each recipe really used is reported beside the budget. Every
model is then evaluated with the ``standard`` suite (APGD-CE, APGD-T, FAB-T, Square and the
rest; per-sample worst case) on the same test points, and clean accuracy on the whole test set.

Prints one JSON document, and a Markdown table on stderr for the README.

    .venv/bin/python benchmarks/recipes.py [--budget 600] [--n-samples 500] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from attacks import PGD
from iocane.base.config import Config, OptimConfig, load_config
from iocane.base.layout import Layout
from iocane.base.logs import setup_console_logging
from iocane.base.settings import resolve_device
from iocane.data.prepared import Split, load_prepared, prepare_data
from iocane.model_files import load_model
from iocane.robustness.suite import evaluate_robustness
from iocane.training.hardware import resolve_hardware
from iocane.training.loop import fit
from iocane.training.recipes import Recipe
from iocane.training.validation import evaluate_split
from models import ModelSpec, build_model

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
RECIPES = ("natural", "pgd", "trades", "fgsm_rs", "free")
DEFAULTS = [
    "data.dataset=fashion_mnist",
    f"data.root={FASHION_ROOT}",
    "data.limit_train=10000",
    "model.name=madry_cnn",  # about 10x cheaper than small_cnn on 28x28 (README, Other datasets)
    "model.width=2",
    "warmup.epochs=3",
    "warmup.batch_size=128",
    "train.batch_size=128",
    "train.lr=0.05",
    "train.eps=0.1",
    "train.steps=10",
    "train.step_size=0.025",
    "train.eps_ramp_epochs=0",
    "train.adv_weight=1.0",
    "train.free_replays=4",
]
VALIDATION_IMAGES = 500
CALIBRATION_BATCHES = 6


def recipe_for(config: Config, name: str) -> Recipe | None:
    """The recipe a ``--recipes`` entry names (its ``+schedule`` part aside)."""
    method = name.partition("+")[0]
    if method == "natural":
        return None
    train = config.train
    if method.startswith("pgd") and method[3:].isdigit():  # few-step PGD: pgd3, pgd4, pgd5
        steps = int(method[3:])
        update = {"method": "pgd", "steps": steps, "step_size": 2.5 * train.eps / steps}
        return Recipe.from_config(train.model_copy(update=update))
    return Recipe.from_config(train.model_copy(update={"method": method}))


def schedule_for(config: Config, name: str) -> str:
    """``train.lr_schedule``, or the schedule after a ``+`` in a ``--recipes`` entry."""
    return name.partition("+")[2] or config.train.lr_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--budget", type=float, default=600.0, help="CPU seconds per recipe")
    parser.add_argument("--n-samples", type=int, default=500, help="test points attacked")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args()
    setup_console_logging()
    config = load_config(PROJECT_ROOT / "params.yaml", [*DEFAULTS, *args.set])
    device = resolve_device()
    hardware = resolve_hardware(device, config.runtime)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        layout = Layout(root / "shared")
        prepare_data(config, layout)
        data = load_prepared(layout)
        data = dataclasses.replace(
            data,
            val=Split(data.val.images[:VALIDATION_IMAGES], data.val.labels[:VALIDATION_IMAGES]),
        )
        spec: ModelSpec = data.model_spec(config.model)

        # The shared natural warmup, the start of every recipe.
        torch.manual_seed(config.seed)
        started = time.process_time()
        warm = build_model(spec)
        fit(
            stage="warmup", model=warm, spec=spec, data=data, optim=config.warmup, recipe=None,
            val_attack=None, layout=layout, seed=config.seed, run_key="warmup", device=device,
            hardware=hardware,
        )  # fmt: skip
        warmup_cpu = time.process_time() - started
        warm_file = layout.model_file("warmup")

        val_attack = PGD(eps=config.train.eps, steps=config.train.steps, seed=1)
        started = time.process_time()
        evaluate_split(load_model(warm_file, device)[0], data.val.to(device), val_attack, 512)
        validation_cpu = time.process_time() - started

        for method in args.recipes.split(","):
            recipe = recipe_for(config, method)

            def train(epochs: int, where: Layout, recipe=recipe, method=method) -> dict:
                settings = {
                    field: getattr(config.train, field) for field in OptimConfig.model_fields
                }
                settings["lr_schedule"] = schedule_for(config, method)
                torch.manual_seed(config.seed + 1)
                return fit(
                    stage="train", model=load_model(warm_file, device)[0], spec=spec, data=data,
                    optim=OptimConfig(**{**settings, "epochs": epochs}), recipe=recipe,
                    val_attack=val_attack if recipe else None, layout=where,
                    seed=config.seed + 1, run_key=method, device=device,
                    select="best" if recipe else "last", hardware=hardware,
                )  # fmt: skip

            started = time.process_time()
            train(1, Layout(root / f"{method}-calibration"))
            epoch_cpu = time.process_time() - started
            epochs = max(1, round(args.budget / epoch_cpu))
            started = time.process_time()
            wall = time.perf_counter()
            final = train(epochs, Layout(root / method))
            training_cpu = time.process_time() - started
            training_wall = time.perf_counter() - wall
            trained = load_model(Layout(root / method).model_file("train"), device)[0]
            test = data.test
            clean = evaluate_split(trained, test.to(device), None, 1000)["clean_accuracy"]
            robust = evaluate_robustness(
                trained,
                test.images[: args.n_samples],
                test.labels[: args.n_samples],
                norm=config.train.norm,
                eps=config.train.eps,
                preset="standard",
                device=device,
            )
            results[method] = {
                "epochs": epochs,
                "calibration_epoch_cpu_seconds": round(epoch_cpu, 1),
                "training_cpu_seconds": round(training_cpu, 1),
                "training_wall_seconds": round(training_wall, 1),
                "selected_epoch": final["selected_epoch"],
                "catastrophic_overfitting": final["catastrophic_overfitting"],
                "clean_accuracy_full_test": round(clean, 4),
                "clean_accuracy": robust.clean_accuracy,
                "robust_accuracy": robust.robust_accuracy,
                "per_attack": robust.per_attack,
                "flags": robust.flags,
                "evaluation_seconds": round(robust.seconds, 1),
            }
            print(json.dumps({method: results[method]}), file=sys.stderr, flush=True)

    report = {
        "benchmark": "recipes",
        "dataset": config.data.dataset,
        "train_images": len(data.train),
        "model": config.model.name,
        "threat_model": config.train.norm,
        "eps": config.train.eps,
        "budget_cpu_seconds": args.budget,
        "warmup_cpu_seconds": round(warmup_cpu, 1),
        "validation_cpu_seconds_per_epoch": round(validation_cpu, 1),
        "n_samples_attacked": args.n_samples,
        "suite": "standard",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "overrides": [*DEFAULTS, *args.set],
        "recipes": results,
    }
    print(json.dumps(report, indent=2))
    print(markdown_table(report), file=sys.stderr)


def markdown_table(report: dict) -> str:
    rows = [
        "| recipe | epochs | CPU s used | clean accuracy (test) | robust accuracy (worst case) |",
        "|---|---|---|---|---|",
    ]
    for method, result in report["recipes"].items():
        note = " (collapsed)" if result["catastrophic_overfitting"] else ""
        rows.append(
            f"| {method}{note} | {result['epochs']} | {result['training_cpu_seconds']:.0f} | "
            f"{result['clean_accuracy_full_test']:.3f} | {result['robust_accuracy']:.3f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
