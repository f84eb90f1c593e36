"""Does training against several threats help? ``pgd`` against ``multi_threat`` on digits, each
model measured per threat (issue 31, item 7: "measured, not assumed").

From one natural warmup (params.yaml's), three models train for the same number of epochs
(``--epochs``, default 5) with params.yaml's ``train`` section otherwise:

- ``pgd``: Madry's PGD-10 at Linf eps 0.1 (the default recipe);
- ``multi_threat_mixed``: ``train.method=multi_threat``, ``threat_mode=mixed``: one threat per
  batch in turn, over ``TRAIN_THREATS`` (the evaluation's budgets);
- ``multi_threat_worst``: the same threats, per sample the highest-loss example of all four
  (about four attacks per batch, so about four times ``pgd``'s cost).

The natural warmup is measured too. Every model is then attacked on the whole test split, per
threat, with the attacks themselves (not the pipeline's threat profile):

- clean accuracy;
- ``linf`` 0.1: the ``--preset`` suite of ``evaluate_robustness`` at Linf (APGD-CE, APGD-T, ...);
- ``l0`` 2 pixels: the preset's L0 attacks (``pgd_l0``, ``sparse_rs``), per-sample worst case;
- ``patch`` 2x2: the preset's patch attacks (``patch_pgd``, ``patch_rs``);
- ``spatial``: ``SpatialGrid`` (rotations up to 15 degrees in 7 steps, shifts up to 1 pixel in 3
  per axis) and ``SpatialPGD`` (10 steps), per-sample worst case.

Prints one JSON document (the results file) and a Markdown table on stderr.

    .venv/bin/python benchmarks/multi_threat.py [--epochs 5] [--preset quick] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from attacks.spatial import SpatialGrid, SpatialPGD
from iocane.base.config import Config, OptimConfig, load_config
from iocane.base.layout import Layout
from iocane.base.settings import resolve_device
from iocane.data.prepared import PreparedData, load_prepared, prepare_data
from iocane.model_files import load_model
from iocane.robustness.suite import evaluate_robustness
from iocane.training.loop import fit
from iocane.training.recipes import Recipe
from iocane.training.validation import validation_attack
from models import build_model

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TRAIN_THREATS = "{linf: 0.1, l0: 2, patch: 2, spatial: {rotate: 15, translate: 1}}"
MODELS = {
    "pgd": ["train.method=pgd"],
    "multi_threat_mixed": [
        "train.method=multi_threat",
        f"train.threats={TRAIN_THREATS}",
        "train.threat_mode=mixed",
    ],
    "multi_threat_worst": [
        "train.method=multi_threat",
        f"train.threats={TRAIN_THREATS}",
        "train.threat_mode=worst",
    ],
}
NORM_THREATS = {"linf": ("Linf", 0.1), "l0": ("L0", 2), "patch": ("patch", 2)}
SPATIAL = {"rotate": 15.0, "translate": 1.0, "rotations": 7, "translations": 3}


def train_model(config: Config, data: PreparedData, warm_file: Path, root: Path) -> dict:
    """``fit`` of the ``train`` stage from the warmup weights, as ``iocane run`` trains."""
    device = torch.device("cpu")
    torch.manual_seed(config.seed + 1)
    started = time.perf_counter()
    optim = OptimConfig(**{key: getattr(config.train, key) for key in OptimConfig.model_fields})
    final = fit(
        stage="train", model=load_model(warm_file, device)[0], spec=data.model_spec(config.model),
        data=data, optim=optim,
        recipe=Recipe.from_config(config.train), val_attack=validation_attack(config),
        layout=Layout(root), seed=config.seed + 1, run_key="benchmark", device=device,
        select=config.train.select,
    )  # fmt: skip
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "selected_epoch": final["selected_epoch"],
        "catastrophic_overfitting": final["catastrophic_overfitting"],
        "card": type(Recipe.from_config(config.train)).card_text(config.train),
    }


def spatial_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Per-sample worst case of the grid and the first-order spatial attack."""
    model.eval()
    members = {
        "spatial_grid": SpatialGrid(**SPATIAL),
        "spatial_pgd": SpatialPGD(rotate=SPATIAL["rotate"], translate=SPATIAL["translate"]),
    }
    robust = torch.ones(len(labels), dtype=torch.bool)
    per_member = {}
    started = time.perf_counter()
    for name, attack in members.items():
        with torch.no_grad():
            correct = model(attack(model, images, labels)).argmax(1) == labels
        per_member[name] = round(correct.float().mean().item(), 4)
        robust &= correct
    seconds = round(time.perf_counter() - started, 1)
    return {
        "accuracy": round(robust.float().mean().item(), 4),
        "members": per_member,
        "seconds": seconds,
    }


def threat_profile(model: nn.Module, data: PreparedData, preset: str, n_test: int) -> dict:
    images, labels = data.test.images, data.test.labels  # float32 in [0, 1]
    if n_test:
        images, labels = images[:n_test], labels[:n_test]
    profile: dict[str, dict] = {}
    for name, (norm, eps) in NORM_THREATS.items():
        result = evaluate_robustness(
            model, images, labels, norm=norm, eps=eps, preset=preset, device="cpu"
        )
        profile.setdefault("clean", {"accuracy": round(result.clean_accuracy, 4)})
        profile[name] = {
            "accuracy": round(result.robust_accuracy, 4),
            "members": {key: round(value, 4) for key, value in result.per_attack.items()},
            "flags": result.flags,
            "seconds": round(result.seconds, 1),
        }
    profile["spatial"] = spatial_accuracy(model, images, labels)
    return profile


def markdown_table(models: dict) -> str:
    names = ["clean", "linf", "l0", "patch", "spatial"]
    rows = ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for model, result in models.items():
        cells = [f"{result['threats'][name]['accuracy']:.3f}" for name in names]
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5, help="train epochs of every model")
    parser.add_argument("--preset", default="quick", help="suite preset of the norm threats")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--n-test", type=int, default=0, help="first N test images; 0 = all")
    parser.add_argument("--out", type=Path, help="also write the JSON here, after every model")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    common = [f"train.epochs={args.epochs}", *args.set]
    base = load_config(PROJECT_ROOT / "params.yaml", common)
    report: dict = {
        "benchmark": "multi_threat",
        "dataset": base.data.dataset,
        "model": base.model.name,
        "train_epochs": args.epochs,
        "train_threats": TRAIN_THREATS,
        "preset": args.preset,
        "spatial": SPATIAL,
        "device": str(resolve_device()) + " (run on cpu)",
        "torch_threads": torch.get_num_threads(),
        "command": " ".join(["benchmarks/multi_threat.py", *sys.argv[1:]]),
        "overrides": common,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        layout = Layout(root / "shared")
        prepare_data(base, layout)
        data = load_prepared(layout)
        torch.manual_seed(base.seed)
        warm = build_model(data.model_spec(base.model))
        fit(
            stage="warmup", model=warm, spec=data.model_spec(base.model), data=data,
            optim=base.warmup, recipe=None, val_attack=None, layout=layout, seed=base.seed,
            run_key="warmup", device=torch.device("cpu"),
        )  # fmt: skip
        warm_file = layout.model_file("warmup")
        report["test_images"] = min(len(data.test), args.n_test or len(data.test))
        natural = load_model(warm_file, torch.device("cpu"))[0]
        report["models"]["natural"] = {
            "threats": threat_profile(natural, data, args.preset, args.n_test)
        }
        print(json.dumps({"natural": report["models"]["natural"]}), file=sys.stderr, flush=True)
        for name in args.models.split(","):
            config = load_config(PROJECT_ROOT / "params.yaml", [*common, *MODELS[name]])
            training = train_model(config, data, warm_file, root / name)
            model = load_model(Layout(root / name).model_file("train"), torch.device("cpu"))[0]
            report["models"][name] = {
                "overrides": MODELS[name],
                "training": training,
                "threats": threat_profile(model, data, args.preset, args.n_test),
            }
            print(json.dumps({name: report["models"][name]}), file=sys.stderr, flush=True)
            if args.out:  # a partial result survives an interrupted run
                args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(markdown_table(report["models"]), file=sys.stderr)


if __name__ == "__main__":
    main()
