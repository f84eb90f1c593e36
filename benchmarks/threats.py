"""The threat profile on Fashion-MNIST: what the natural and the Linf-hardened model withstand.

Both models (``l0_vs_torchattacks.fashion_models``: trained now with the project's own stages,
or kept in ``--model-dir`` from a run before; a multi-threat model joins with ``--model
NAME=FILE``) face the same test points: the ``standard`` suite at the training threat (Linf
0.1) and every threat of ``configs/fashion_mnist.yaml``'s profile (``evaluate.threats``: L0 12
pixels, a 5x5 patch, the corruptions at severities 1, 3, 5, rotations up to 30 degrees and
shifts up to 3 pixels), through ``iocane.robustness.threat_profile``, the code the evaluate stage
runs. It prints one JSON document (per model and threat: the accuracy, each member's, the
seconds) and draws the profile figure (``--figure``). With ``--l0-comparison`` it adds iocane's
L0 attacks against torchattacks' (``l0_vs_torchattacks.compare_l0``) on the same points.

    .venv/bin/python benchmarks/threats.py --model-dir /tmp/l0-models --n-samples 1000 \\
        --out benchmarks/results/threats-fashion_mnist-DATE.json --figure /tmp/profile.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from l0_vs_torchattacks import PROJECT_ROOT, compare_l0, fashion_models

from iocane.base.config import load_config
from iocane.model_files import load_model
from iocane.reports.figures import plot_threat_profile
from iocane.reports.threats import threat_bars
from iocane.robustness.suite import evaluate_robustness, suite_from_config
from iocane.robustness.threat_profile import threat_profile
from iocane.training.hardware import subnormals_flushed


def _profile(config, models: dict, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Per model: the suite at the training threat, then the profile (natural as the baseline
    of every other model)."""
    suite = {}
    for name, model in models.items():
        started = time.perf_counter()
        result = evaluate_robustness(
            model,
            images,
            labels,
            norm=config.train.norm,
            eps=config.train.eps,
            attacks=suite_from_config(config),  # no transfer: every model faces the same attacks
            preset=config.evaluate.preset,
            batch_size=config.evaluate.batch_size,
            seed=config.seed,
        )
        suite[name] = {**result.to_dict(), "seconds": round(time.perf_counter() - started, 1)}
        print(f"{name}: suite {suite[name]['robust_accuracy']:.4f}", file=sys.stderr)
    profiles = {}
    for name, model in models.items():
        pair = {"hardened": model, "natural": models["natural"]} if name != "natural" else None
        if pair is None:
            continue
        results = {"hardened": suite[name], "natural": suite["natural"]}
        profiles[name] = threat_profile(config, pair, images, labels, results)
    return {"suite": suite, "profiles": profiles}


@subnormals_flushed()  # as the evaluate stage runs
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2, help="adversarial training epochs")
    parser.add_argument("--model-dir", type=Path, help="keep (or reuse) the trained models here")
    parser.add_argument("--model", action="append", default=[], help="NAME=FILE, another model")
    parser.add_argument("--l0-comparison", action="store_true", help="against torchattacks too")
    parser.add_argument("--figure", type=Path, help="the profile figure of the hardened model")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    models, data = fashion_models(args.model_dir, args.epochs)
    models = dict(models)
    for spec in args.model:
        name, _, file = spec.partition("=")
        models[name] = load_model(Path(file), "cpu")[0]
    overrides = [f"evaluate.n_samples={args.n_samples}", "evaluate.preset=standard"]
    config = load_config(PROJECT_ROOT / "configs" / "fashion_mnist.yaml", overrides)
    test = data["test"]
    images, labels = test.images[: args.n_samples], test.labels[: args.n_samples]
    measured = _profile(config, models, images, labels)
    document = {
        "benchmark": "threats",
        **data["setup"],
        "n_samples": len(labels),
        "preset": "standard",
        "torch_threads": torch.get_num_threads(),
        "threats": {key: str(value) for key, value in config.evaluate.threats.profile().items()},
        **measured,
    }
    if args.l0_comparison:
        document["l0_comparison"] = {
            name: compare_l0(model, images, labels, [config.evaluate.threats.l0])
            for name, model in models.items()
        }
    if args.figure is not None:
        hardened, natural = measured["suite"]["hardened"], measured["suite"]["natural"]
        evaluation = {
            "hardened": hardened,
            "natural": natural,
            "threats": measured["profiles"]["hardened"],
        }
        plot_threat_profile(threat_bars(evaluation), args.figure)
    text = json.dumps(document, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
