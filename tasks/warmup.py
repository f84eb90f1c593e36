"""The ``warmup`` stage: natural training (from scratch, or from the user's ``model.weights``),
the curriculum start and the natural baseline (Madry et al.'s "natural" model)."""

from __future__ import annotations

import time

import torch

from iocane.config import MODEL_SOURCE_DEFAULTS, Config
from iocane.data.prepared import load_prepared
from iocane.files import read_json, sha256_file, write_json
from iocane.layout import Layout
from iocane.modelio import save_model
from iocane.settings import resolve_device
from iocane.training.base_model import load_base_weights, model_spec_for
from iocane.training.checkpoints import run_key
from iocane.training.epoch import write_history
from iocane.training.hardware import resolve_hardware
from iocane.training.loop import ModelRef, fit
from iocane.training.validation import evaluate_split
from models import build_model


def run_warmup(config: Config, layout: Layout) -> ModelRef:
    """The ``warmup`` stage: the natural baseline, trained or given."""
    device = resolve_device()
    hardware = resolve_hardware(device, config.runtime)
    data = load_prepared(layout)
    spec = model_spec_for(config.model, data)
    torch.manual_seed(config.seed)
    model = build_model(spec).to(device)
    base = None
    if config.model.weights is not None:
        base = load_base_weights(model, config.model, spec.num_classes, root=layout.root)
    key = run_key(
        "warmup",
        config.seed,
        _model_key(config, base),
        config.to_dict()["warmup"],
        data.meta["fingerprint"],
        hardware.describe(),
    )
    path = layout.model_file("warmup")
    if config.warmup.epochs == 0:
        _given_baseline(model=model, spec=spec, data=data, layout=layout, key=key, base=base)
        return ModelRef(str(path), sha256_file(path))
    fit(
        stage="warmup",
        model=model,
        spec=spec,
        data=data,
        optim=config.warmup,
        recipe=None,
        # Clean validation only: the warmup must not depend on train.* (DVC reruns it otherwise);
        # the natural model's robustness is measured by the evaluate stage.
        val_attack=None,
        layout=layout,
        seed=config.seed,
        run_key=key,
        device=device,
        hardware=hardware,
    )
    if base is not None:
        metrics = read_json(layout.metrics_file("warmup"))
        write_json(layout.metrics_file("warmup"), {**metrics, "base_model": base})
    return ModelRef(str(path), sha256_file(path))


def _model_key(config: Config, base: dict | None) -> dict:
    """``model.*`` for the run key, without the new keys at their defaults (so the key, and the
    checkpoints it names, are those of a run before they existed), with the weights' digest."""
    model = config.to_dict()["model"]
    key = {k: v for k, v in model.items() if MODEL_SOURCE_DEFAULTS.get(k, object()) != v}
    if base is not None:
        key["weights"] = base["sha256"]
    return key


def _given_baseline(*, model, spec, data, layout: Layout, key: str, base: dict | None) -> None:
    """``warmup.epochs: 0``: the user's model as it is, measured on the validation split."""
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
        "run_key": key,
        "base_model": base,
    }
    write_json(layout.metrics_file("warmup"), metrics)
