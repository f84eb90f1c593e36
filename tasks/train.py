"""The ``train`` stage: adversarial training (the recipe in ``train.method``) starting from the
warmup weights, in one process or in ``train.nproc`` data-parallel processes."""

from __future__ import annotations

import logging

from iocane.base.config import Config
from iocane.base.files import sha256_file
from iocane.base.layout import Layout
from iocane.base.settings import resolve_device
from iocane.training.launcher import launch
from iocane.training.loop import ModelRef, train_in_process
from iocane.training.ranks import Ranks

log = logging.getLogger("iocane")  # the console handler's logger (iocane.base.logs)


def run_train(config: Config, layout: Layout) -> ModelRef:
    """The ``train`` stage: PGD adversarial training starting from the warmup weights, in one
    process, or in ``train.nproc`` data-parallel processes started by torchrun."""
    for note in config.start_defaults:  # train.* keys left null, filled for model.weights
        log.info(note)
    if config.train.nproc > 1:
        launch(config, layout)
    else:
        train_in_process(config, layout, Ranks(), resolve_device())
    path = layout.model_file("train")
    return ModelRef(str(path), sha256_file(path))
