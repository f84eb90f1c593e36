"""The grid behind the defaults for a start from ``model.weights``
(``iocane/base/start_defaults.py``): train.lr x train.eps_ramp_epochs,
each cell hardening the same natural model on the same prepared data, in one process.
Run through ``benchmarks/own_model.py --grid``, which makes the data and the natural model
first; ``best_cell`` is the rule that chose the defaults.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from iocane.base.config import load_config
from iocane.base.layout import Layout
from iocane.data.prepared import prepare_data

GRID_LR = (0.05, 0.01, 0.002)  # 0.05: the train.lr for training from scratch
GRID_RAMP = (0, 2)  # 2: params.yaml's train.eps_ramp_epochs
GRID_EVAL_SAMPLES = 500


def run_grid(project: Path, base: list[str]) -> dict:
    """train.lr x train.eps_ramp_epochs from the same natural weights on the same prepared
    data, in this process: the warmup (the given model), train, then the quick suite on the
    same GRID_EVAL_SAMPLES test images for each cell and once for the natural model."""
    from iocane import evaluate_robustness
    from iocane.data.prepared import load_prepared
    from iocane.model_files import load_model
    from iocane.robustness.suite import evaluation_subset
    from tasks.train import run_train
    from tasks.warmup import run_warmup

    os.chdir(project)  # data.root and model.weights are relative to the project
    config = load_config(project / "params.yaml", base)
    started = time.perf_counter()
    prepare_data(config, Layout(project))
    prepare_seconds = round(time.perf_counter() - started, 1)
    data = load_prepared(Layout(project))
    images, labels = evaluation_subset(
        data.test.images, data.test.labels, GRID_EVAL_SAMPLES, config.seed
    )

    def suite(model: nn.Module) -> dict:
        result = evaluate_robustness(
            model, images, labels, eps=config.train.eps, preset="quick", seed=config.seed
        )
        return {
            "clean_accuracy": round(result.clean_accuracy, 4),
            "robust_accuracy": round(result.robust_accuracy, 4),
            "flags": result.flags,
        }

    cells = []
    for lr in GRID_LR:
        for ramp in GRID_RAMP:
            cell = Layout(project / "grid" / f"lr{lr}-ramp{ramp}")
            shutil.copytree(project / "data" / "prepared", cell.prepared_dir)
            shutil.copy(project / "natural.pt", cell.root / "natural.pt")
            overrides = [*base, f"train.lr={lr}", f"train.eps_ramp_epochs={ramp}"]
            cell_config = load_config(project / "params.yaml", overrides)
            run_warmup(cell_config, cell)
            started = time.perf_counter()
            run_train(cell_config, cell)
            seconds = round(time.perf_counter() - started, 1)
            figures = suite(load_model(cell.model_file("train"), torch.device("cpu"))[0])
            cells.append({"lr": lr, "eps_ramp_epochs": ramp, "train_seconds": seconds, **figures})
            print(json.dumps(cells[-1]), flush=True)
    # Every cell's warmup is the same given model: measure it once.
    natural = load_model(cell.model_file("warmup"), torch.device("cpu"))[0]
    return {
        "prepare_seconds": prepare_seconds,
        "counts": data.meta["counts"],
        "n_samples": len(labels),
        "natural": suite(natural),
        "cells": cells,
    }


def best_cell(grid: dict, max_clean_drop: float = 0.12) -> dict:
    """The rule that chose the defaults: the highest worst-case robust accuracy among the cells
    whose clean accuracy stays within ``max_clean_drop`` of the natural model's on the same
    images (configs/fashion_mnist.yaml's gate), with the cells it cannot be told apart from
    (robust accuracy within two standard errors of a difference at that sample size)."""
    natural = grid["natural"]["clean_accuracy"]
    kept = [c for c in grid["cells"] if natural - c["clean_accuracy"] <= max_clean_drop]
    kept = kept or grid["cells"]  # none keeps its clean accuracy: the most robust of all
    best = max(kept, key=lambda cell: cell["robust_accuracy"])
    p = best["robust_accuracy"]
    noise = 2 * math.sqrt(2 * p * (1 - p) / grid["n_samples"])
    return {
        "rule": f"highest robust accuracy with clean drop <= {max_clean_drop} vs the natural",
        "best": {"lr": best["lr"], "eps_ramp_epochs": best["eps_ramp_epochs"]},
        "two_standard_errors": round(noise, 3),
        "not_distinguishable_from": [
            {"lr": c["lr"], "eps_ramp_epochs": c["eps_ramp_epochs"]}
            for c in kept
            if c is not best and p - c["robust_accuracy"] < noise
        ],
    }
