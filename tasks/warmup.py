"""The ``warmup`` stage: natural training (from scratch, or from the user's ``model.weights``),
the curriculum start and the natural baseline (Madry et al.'s "natural" model)."""

from __future__ import annotations

import torch

from iocane.base.config import Config
from iocane.base.files import read_json, sha256_file, write_json
from iocane.base.layout import Layout
from iocane.base.settings import resolve_device
from iocane.data.prepared import load_prepared
from iocane.model_files import load_base_weights, model_spec_for
from iocane.training.checkpoints import run_key, run_params
from iocane.training.given_baseline import given_baseline
from iocane.training.hardware import resolve_hardware
from iocane.training.loop import ModelRef, fit
from models import build_model


def run_warmup(config: Config, layout: Layout) -> ModelRef:
    """The ``warmup`` stage: the natural baseline, trained or given."""
    device = resolve_device()
    hardware = resolve_hardware(device, config.runtime)
    data = load_prepared(layout)
    spec = model_spec_for(config.model, data.model_spec(config.model))
    torch.manual_seed(config.seed)
    model = build_model(spec).to(device)
    base = None
    if config.model.weights is not None:
        base = load_base_weights(model, config.model, spec.num_classes, root=layout.root)
    # the digest of the weights it starts from: a file's sha256, or a URI's weights'
    digest = base and (base.get("sha256") or base["state_sha256"])
    params = run_params("warmup", config)
    params["model"] = {**params["model"], "weights": digest}
    key = run_key("warmup", params, data.meta["fingerprint"], hardware.describe())
    path = layout.model_file("warmup")
    if config.warmup.epochs == 0:
        given_baseline(model=model, spec=spec, data=data, layout=layout, run_key=key, base=base)
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
        keep_checkpoints=config.warmup.keep_checkpoints,
    )
    if base is not None:
        metrics = read_json(layout.metrics_file("warmup"))
        write_json(layout.metrics_file("warmup"), {**metrics, "base_model": base})
    return ModelRef(str(path), sha256_file(path))
