"""The ``prepare`` stage: load the dataset, split it, fingerprint it (``data/prepared``)."""

from __future__ import annotations

from iocane.config import Config
from iocane.data.prepared import PreparedRef, prepare_data
from iocane.layout import Layout


def run_prepare(config: Config, layout: Layout) -> PreparedRef:
    """The ``prepare`` stage (see ``iocane.data.prepared.prepare_data``)."""
    return prepare_data(config, layout)
