"""The ``warmup`` stage: natural training from scratch, the curriculum start and the natural
baseline (Madry et al.'s "natural" model)."""

from __future__ import annotations

import torch

from iocane.config import Config
from iocane.data.prepared import load_prepared
from iocane.files import sha256_file
from iocane.layout import Layout
from iocane.settings import resolve_device
from iocane.training.checkpoints import run_key
from iocane.training.hardware import resolve_hardware
from iocane.training.loop import ModelRef, fit
from models import build_model


def run_warmup(config: Config, layout: Layout) -> ModelRef:
    """The ``warmup`` stage: natural training from scratch; the natural baseline."""
    device = resolve_device()
    hardware = resolve_hardware(device, config.runtime)
    data = load_prepared(layout)
    spec = data.model_spec(config.model)
    torch.manual_seed(config.seed)
    model = build_model(spec).to(device)
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
        run_key=run_key(
            "warmup",
            config.seed,
            config.to_dict()["model"],
            config.to_dict()["warmup"],
            data.meta["fingerprint"],
            hardware.describe(),
        ),
        device=device,
        hardware=hardware,
    )
    path = layout.model_file("warmup")
    return ModelRef(str(path), sha256_file(path))
