"""Bare state_dicts in files: ``.pt`` / ``.pth`` (read with ``torch.load(weights_only=True)``) and
``.safetensors``, read, written, and loaded into a network whose every key they must fit.

A state_dict holds the bare network that ``model.name`` builds (the keys of
``torchvision.models.resnet18().state_dict()``, say). An iocane model file, or a state_dict whose
keys all start with ``net.`` / ``normalize.``, is read as iocane's wrapped model: its ``net.`` part
is what ``network_part`` keeps. iocane's normalisation comes from the spec, never from the file.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import torch
from torch import nn

from iocane.base.errors import ModelSourceError
from iocane.base.files import write_atomic
from models.sources import last_linear

log = logging.getLogger(__name__)

SAFETENSORS = ".safetensors"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_state_dict(path: Path, what: str = "model.weights:") -> dict[str, torch.Tensor]:
    """A state_dict from ``.pt`` / ``.pth`` (``weights_only``) or ``.safetensors``; ``what``
    starts the messages (the key or option that named the file)."""
    if not path.is_file():
        raise ModelSourceError(f"{what} {path} does not exist")
    if path.suffix == SAFETENSORS:
        try:
            from safetensors.torch import load_file
        except ImportError:  # a dependency, but an environment may have lost it
            raise ModelSourceError(
                f"{what} {path} is a .safetensors file; pip install safetensors to read it"
            ) from None
        try:
            return load_file(str(path))
        except Exception as error:  # SafetensorError: a bad header, a truncated file...
            raise ModelSourceError(
                f"{what} {path} is not a .safetensors file that loads: {_first_line(error)}"
            ) from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for pickled code, RuntimeError, EOFError...
        raise ModelSourceError(
            f"{what} {path} is not a state_dict that loads safely: {_first_line(error)}"
        ) from None
    if isinstance(payload, dict) and "state_dict" in payload and "spec" in payload:
        payload = payload["state_dict"]  # an iocane model file
    if not isinstance(payload, dict) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise ModelSourceError(f"{what} {path} holds no state_dict (name -> tensor)")
    return payload


def save_state_dict(path: Path, network: nn.Module) -> None:
    """Write ``network``'s bare state_dict, atomically: ``.safetensors`` by its suffix, else
    ``torch.save`` (a ``.pt`` that ``read_state_dict`` reads back)."""
    # safetensors refuses views of one storage and non-contiguous tensors: give it copies.
    state = {
        name: tensor.detach().cpu().contiguous().clone()
        for name, tensor in network.state_dict().items()
    }
    if path.suffix == SAFETENSORS:
        from safetensors.torch import save

        write_atomic(path, lambda stream: stream.write(save(state)))
        return

    def write(stream: io.BufferedIOBase) -> None:
        torch.save(state, stream)

    write_atomic(path, write)


def network_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare network's keys: ``net.*`` of an iocane-wrapped state_dict, else all of them."""
    if state and all(key.startswith(("net.", "normalize.")) for key in state):
        return {key[4:]: value for key, value in state.items() if key.startswith("net.")}
    return state


def load_network_state(
    network: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    where: str,
    model_name: str,
    num_classes: int,
    reset_head: bool = False,
) -> None:
    """Load a bare network's ``state`` into ``network``; every key must fit. ``where`` names
    the source in messages (``model.weights: mine.pt``). A head of another class count is an
    error naming both numbers, unless ``reset_head`` keeps the freshly built head."""
    head = last_linear(network)
    head_keys = {f"{head[0]}.weight", f"{head[0]}.bias"} if head is not None else set()
    if reset_head:
        if head is None:
            raise ModelSourceError("model.reset_head: the network has no nn.Linear layer to reset")
        state = {key: value for key, value in state.items() if key not in head_keys}
        log.info(
            "model.reset_head: the last linear layer %s is replaced by a fresh %d-class layer",
            head[0],
            num_classes,
        )
    elif head is not None and f"{head[0]}.weight" in state:
        given = state[f"{head[0]}.weight"].shape[0]
        if given != num_classes:
            raise ModelSourceError(
                f"{where}'s classifier head {head[0]} has {given} classes but the "
                f"data has {num_classes}; set model.reset_head: true to replace it"
            )
    missing, unexpected = _load(network, state, where)
    if reset_head:
        missing = [key for key in missing if key not in head_keys]
    if missing or unexpected:
        raise ModelSourceError(
            f"{where} does not fit model.name {model_name}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def _load(network: nn.Module, state: dict, where: str) -> tuple[list[str], list[str]]:
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that differ
        detail = " ".join(str(error).split())[:300]
        message = f"{where} does not fit its network: {detail}"
        raise ModelSourceError(message) from None
    return list(result.missing_keys), list(result.unexpected_keys)
