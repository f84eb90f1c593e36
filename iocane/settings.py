"""The environment variables iocane reads, in one place.

``resolve_device`` picks the device at run time, never at import: CUDA when present, else CPU;
``IOCANE_DEVICE`` overrides (``cpu``, ``cuda:1``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device() -> torch.device:
    """CUDA when present, else CPU; ``IOCANE_DEVICE`` overrides. Chosen at run time."""
    import torch  # here, not at import: bad params must exit before torch loads

    name = os.environ.get("IOCANE_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
