"""The ``register`` stage: the MLflow run, the registered version with its evidence, and the
alias the promotion rules give it."""

from __future__ import annotations

from iocane.base.config import Config
from iocane.base.layout import Layout
from iocane.registry.registration import Registration, register_version


def run_register(config: Config, layout: Layout, attempt_run_id: str | None = None) -> Registration:
    """The ``register`` stage (see ``iocane.registry.registration.register_version``)."""
    return register_version(config, layout, attempt_run_id)
