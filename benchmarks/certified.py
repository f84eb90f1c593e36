"""Certified training per budget: what IBP and CROWN-IBP training prove, beside what is measured.

On Fashion-MNIST (``configs/fashion_mnist_certified.yaml``, Linf eps 0.1 by default), for each
recipe of ``--recipes`` (``ibp``, ``crown_ibp``) and each training budget of ``--budgets``
(minutes of ``train.budget_minutes``; 5, 10 and 20 by default), the real stages train a model
(``prepare``, ``warmup``, ``train``; the warmup is natural and not counted in the budget) and
it is judged on the same test images (``--n-samples``, drawn with the params' seed):

- clean accuracy;
- certified accuracy by each bound (``iocane.certify.certify_bounds``: IBP, CROWN and their
  per-sample union ``best``): the share proven correct over the whole eps ball, a lower bound;
- the attack suite's worst-case robust accuracy (``iocane.robustness.evaluate_robustness``, the
  params' ``evaluate.preset``), an upper bound;
- ``broken_certified``: certified points the suite broke (must be 0: each would be a bound bug);
- the training's time (the budget's seconds of epochs, the epochs trained) and each figure's.

The natural (warmup) model of the first run is judged too. Prints one JSON document (and writes
it to ``--out``). ``--set KEY=VALUE`` overrides params for trials; ``--train-only`` reports the
selected epoch's validation figures (clean, PGD, IBP-certified) and judges no test images. A
tiny end-to-end check, seconds per point:

    .venv/bin/python benchmarks/certified.py --budgets 0.2 --n-samples 100 --limit-train 2000 \\
        --set evaluate.preset=quick --out /tmp/certified-smoke.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from iocane.base.config import Config, load_config
from iocane.base.layout import Layout
from iocane.base.logs import setup_console_logging
from iocane.certify import certify_bounds
from iocane.data.prepared import load_prepared, prepare_data
from iocane.model_files import load_model
from iocane.robustness.suite import evaluate_robustness, evaluation_subset, suite_from_config
from iocane.training.hardware import subnormals_flushed
from tasks.train import run_train
from tasks.warmup import run_warmup

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS = PROJECT_ROOT / "configs" / "fashion_mnist_certified.yaml"
BOUNDS = ("ibp", "crown")


def judge(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: Config,
    bounds: tuple[str, ...] = BOUNDS,
) -> dict:
    """Clean, certified (per bound and their union) and worst-case attacked accuracy."""
    train = config.train
    model.eval()
    certificates = certify_bounds(
        model, images, labels, norm=train.norm, eps=train.eps, methods=bounds
    )
    attacked = evaluate_robustness(
        model,
        images,
        labels,
        norm=train.norm,
        eps=train.eps,
        attacks=suite_from_config(config),
        preset=config.evaluate.preset,
        batch_size=config.evaluate.batch_size,
        seed=config.seed,
        device="cpu",
    )
    robust = torch.tensor(attacked.robust_per_sample, dtype=torch.bool)
    best = certificates["best"].certified
    return {
        "clean_accuracy": attacked.clean_accuracy,
        "certified_accuracy": {
            name: round(certificate.accuracy, 4) for name, certificate in certificates.items()
        },
        "certify_seconds": {
            name: round(certificate.seconds, 2) for name, certificate in certificates.items()
        },
        "attacked_accuracy": attacked.robust_accuracy,
        "attack_seconds": round(attacked.seconds, 1),
        "broken_certified": int((best & ~robust).sum()),
    }


def train_point(config: Config, root: Path) -> tuple[Layout, dict]:
    """The stages, run for ``config`` in ``root``: the layout and the train stage's metrics."""
    layout = Layout(root)
    prepare_data(config, layout)
    run_warmup(config, layout)
    started = time.perf_counter()
    run_train(config, layout)
    metrics = json.loads(layout.metrics_file("train").read_text())
    metrics["wall_seconds"] = time.perf_counter() - started
    return layout, metrics


def training_figures(metrics: dict) -> dict:
    keys = ("epochs", "selected_epoch", "budget_training_seconds", "wall_seconds")
    figures = {key: metrics.get(key) for key in keys}
    for key in ("val_clean_accuracy", "val_adv_accuracy", "val_certified_accuracy"):
        figures[key] = metrics.get(key)  # the selected epoch's (6,000 validation images)
    return figures


def run(args: argparse.Namespace) -> dict:
    document: dict = {
        "benchmark": "certified",
        "params": str(PARAMS.relative_to(PROJECT_ROOT)),
        "overrides": args.set,
        "n_samples": args.n_samples,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "points": [],
    }
    for recipe in args.recipes:
        for budget in args.budgets:
            overrides = [
                *args.set,
                f"train.method={recipe}",
                f"train.budget_minutes={budget}",
                f"data.limit_train={args.limit_train}",
            ]
            config = load_config(PARAMS, overrides)
            with tempfile.TemporaryDirectory() as directory:
                layout, metrics = train_point(config, Path(directory))
                test = load_prepared(layout).test
                images, labels = evaluation_subset(
                    test.images, test.labels, args.n_samples, config.seed
                )
                if "natural" not in document and not args.train_only:
                    natural, _ = load_model(layout.model_file("warmup"), "cpu")
                    document["natural"] = judge(natural, images, labels, config, args.bounds)
                hardened, _ = load_model(layout.model_file("train"), "cpu")
                point = {"recipe": recipe, "budget_minutes": budget}
                point.update(training_figures(metrics))
                if not args.train_only:
                    point.update(judge(hardened, images, labels, config, args.bounds))
                if args.keep is not None:  # the models, to judge again later
                    kept = args.keep / f"{recipe}-{budget:g}min"
                    kept.mkdir(parents=True, exist_ok=True)
                    for stage in ("warmup", "train"):
                        (kept / f"{stage}.pt").write_bytes(layout.model_file(stage).read_bytes())
            document["points"].append(point)
            print(json.dumps(point), file=sys.stderr)
    return document


@subnormals_flushed()  # as the stages run
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budgets", default="5,10,20", help="minutes, comma-separated")
    parser.add_argument("--recipes", default="ibp,crown_ibp", help="comma-separated")
    parser.add_argument("--n-samples", type=int, default=1000, help="test images judged")
    parser.add_argument("--limit-train", type=int, default=0, help="0 = every training image")
    parser.add_argument("--set", action="append", default=[], help="a params override")
    parser.add_argument("--bounds", default="ibp,crown", help="certify_bounds methods")
    parser.add_argument("--keep", type=Path, help="keep each point's models in this folder")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="trials: report the selected epoch's validation figures, judge no test images",
    )
    args = parser.parse_args()
    setup_console_logging()  # the stages' epoch lines on stderr
    args.budgets = [float(value) for value in args.budgets.split(",")]
    args.recipes = [value.strip() for value in args.recipes.split(",")]
    args.bounds = tuple(value.strip() for value in args.bounds.split(","))
    text = json.dumps(run(args), indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
