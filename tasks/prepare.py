"""The ``prepare`` stage: load the dataset, split it, fingerprint it (``data/prepared``)."""

from __future__ import annotations

from iocane.base.config import Config
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedRef, prepare_data


def run_prepare(config: Config, layout: Layout) -> PreparedRef:
    """The ``prepare`` stage (see ``iocane.data.prepared.prepare_data``)."""
    return prepare_data(config, layout)
