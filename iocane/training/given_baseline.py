"""``warmup.epochs: 0``: the user's model as it is is the natural baseline. It is measured on the
validation split and written where a trained warmup would be (model file, history, metrics)."""

from __future__ import annotations

import time

from torch import nn

from iocane.base.files import write_json
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData
from iocane.model_files import save_model
from iocane.training.epoch import write_history
from iocane.training.validation import evaluate_split
from models import ModelSpec


def given_baseline(
    *,
    model: nn.Module,
    spec: ModelSpec,
    data: PreparedData,
    layout: Layout,
    run_key: str,
    base: dict | None,
) -> None:
    """The given model, measured on the validation split and written as the warmup's outputs."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    figures = evaluate_split(model, data.val.to(device), None, batch_size=256)
    layout.checkpoint_dir("warmup").mkdir(parents=True, exist_ok=True)
    save_model(layout.model_file("warmup"), model, spec)
    write_history(layout.history_file("warmup"), [])
    metrics = {
        "epochs": 0,
        "images_trained": 0,
        "val_clean_accuracy": figures["clean_accuracy"],
        "val_clean_loss": figures["clean_loss"],
        "seconds": time.perf_counter() - started,
        "device": str(device),
        "run_key": run_key,
        "base_model": base,
    }
    write_json(layout.metrics_file("warmup"), metrics)
