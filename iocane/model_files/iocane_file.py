"""iocane's own model file: the architecture spec and a state_dict, nothing else.

It is read with ``torch.load(weights_only=True)``: a file that smuggles pickled code is refused,
not executed. The spec says how to rebuild the network (``models.build_model``), so the file alone
is the whole model: what the stages pass on, and what a version keeps in its run.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch
from torch import nn

from iocane.base.errors import ModelFileError
from iocane.base.files import write_atomic
from models import ModelSpec, build_model


def save_model(path: Path, model: nn.Module, spec: ModelSpec) -> None:
    """Write ``model``'s weights (on the CPU) with its ``spec``, atomically: a stop midway leaves
    the old file or none, never a half-written one."""
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    payload = {"spec": spec.to_dict(), "state_dict": state}

    def write(stream: io.BufferedIOBase) -> None:
        torch.save(payload, stream)

    write_atomic(path, write)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model from its spec and load the weights; eval mode, on ``device``."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"model file {path} is missing") from None
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        # torch's message runs to many lines of advice (including weights_only=False): keep the
        # part that says what the file tried to import.
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        what = f"it imports {unsafe.group(1)}" if unsafe else str(error).strip().splitlines()[0]
        raise ModelFileError(
            f"model file {path} cannot be loaded safely: {what}; iocane reads only files "
            "written by save_model (an architecture spec and a state_dict)"
        ) from None
    if not isinstance(payload, dict) or not {"spec", "state_dict"} <= set(payload):
        raise ModelFileError(f"model file {path} is not an iocane model (no spec/state_dict)")
    try:
        spec = ModelSpec.from_dict(payload["spec"])
        model = build_model(spec)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"model file {path} has an invalid spec: {error}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise ModelFileError(
            f"model file {path} does not fit architecture {spec.name}: {error}"
        ) from None
    return model.to(device).eval(), spec


def is_iocane_file(path: Path) -> bool:
    """Whether ``path`` is an iocane model file (a spec beside the state_dict); a file that does
    not load says nothing here (the loader that reads it names what is wrong)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # read_state_dict or load_model names what is wrong with it
        return False
    return isinstance(payload, dict) and {"spec", "state_dict"} <= set(payload)
