"""The model a warmup starts from: its spec (with ``model.mean`` / ``model.std``) and the user's
weights (``model.weights``), with the lineage that the registry and the model card record.

A weights file holds a state_dict for the bare network that ``model.name`` builds (the keys of
``torchvision.models.resnet18().state_dict()``, say). An iocane model file, or a state_dict whose
keys all start with ``net.`` / ``normalize.``, is read as iocane's wrapped model: its ``net.``
part is loaded. Either way iocane's normalisation comes from ``model.mean`` / ``model.std`` (or
the data), never from the file, so the spec saved with the model stays the truth.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch
from torch import nn

from iocane.base.config import ConfigError, ModelConfig
from iocane.base.errors import ModelSourceError
from iocane.base.files import sha256_file, write_json
from iocane.base.layout import Layout
from iocane.data.prepared import PreparedData
from iocane.model_uris import is_model_uri
from iocane.modelio import save_model
from iocane.training.epoch import write_history
from iocane.training.mlflow_models import state_dict_from_uri
from iocane.training.validation import evaluate_split
from models import ModelSpec
from models.sources import last_linear

log = logging.getLogger(__name__)


def model_spec_for(config: ModelConfig, data: PreparedData) -> ModelSpec:
    """The data's spec for ``model.name``, with ``model.mean`` / ``model.std`` where given."""
    spec = data.model_spec(config)
    changes = {}
    for key in ("mean", "std"):
        values = getattr(config, key)
        if values is None:
            continue
        if len(values) != spec.in_channels:
            raise ConfigError(
                f"model.{key}: {len(values)} value(s) given but the data has "
                f"{spec.in_channels} channel(s)",
                key=f"model.{key}",
            )
        changes[key] = tuple(values)
    return dataclasses.replace(spec, **changes) if changes else spec


def read_state_dict(path: Path, what: str = "model.weights:") -> dict[str, torch.Tensor]:
    """A state_dict from ``.pt`` / ``.pth`` (``weights_only``) or ``.safetensors``; ``what``
    starts the messages (the key or option that named the file)."""
    if not path.is_file():
        raise ModelSourceError(f"{what} {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelSourceError(
                f"{what} {path} is a .safetensors file; pip install safetensors to read it"
            ) from None
        return load_file(str(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for pickled code, RuntimeError, EOFError...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelSourceError(
            f"{what} {path} is not a state_dict that loads safely: {first}"
        ) from None
    if isinstance(payload, dict) and "state_dict" in payload and "spec" in payload:
        payload = payload["state_dict"]  # an iocane model file
    if not isinstance(payload, dict) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise ModelSourceError(f"{what} {path} holds no state_dict (name -> tensor)")
    return payload


def network_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare network's keys: ``net.*`` of an iocane-wrapped state_dict, else all of them."""
    if state and all(key.startswith(("net.", "normalize.")) for key in state):
        return {key[4:]: value for key, value in state.items() if key.startswith("net.")}
    return state


def load_base_weights(
    model: nn.Module, config: ModelConfig, num_classes: int, root: Path | None = None
) -> dict:
    """Load ``model.weights`` into ``model.net``: a state_dict file (relative to the project
    directory ``root``; the lineage is its ``path`` as given and ``sha256``) or a model URI
    (``models:/...``, ``runs:/...``; the lineage is the URI, what it resolved to and the
    ``state_sha256`` of the weights it gave).

    A head whose class count differs from the data's is an error, unless ``model.reset_head``,
    which keeps the freshly built last linear layer instead of the given one."""
    assert config.weights is not None
    if is_model_uri(config.weights):
        state, lineage = state_dict_from_uri(config.weights, root or Path.cwd())
        where = config.weights
    else:
        path = Path(config.weights)
        state = read_state_dict(root / path if root is not None else path)
        lineage = {"path": str(path), "sha256": sha256_file(root / path if root else path)}
        where = str(path)
    load_network_state(
        model.get_submodule("net"),
        network_part(state),
        where=f"model.weights: {where}",
        model_name=config.name,
        num_classes=num_classes,
        reset_head=config.reset_head,
    )
    log.info("warmup starts from %s", describe_lineage(lineage))
    return lineage


def describe_lineage(base: dict) -> str:
    """The lineage in words, as the ``base_model`` tag and the model card say it: the file and
    its sha256, or the URI and what it resolved to."""
    if "uri" not in base:
        return f"{base['path']} (sha256 {base['sha256']})"
    if "version" in base:
        resolved = f"{base['name']} version {base['version']}"
        resolved += f", run {base['run_id']}" if base.get("run_id") else ""
    else:
        resolved = f"run {base['run_id']}"
    return f"{base['uri']} ({resolved})"


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


def given_baseline(
    *,
    model: nn.Module,
    spec: ModelSpec,
    data: PreparedData,
    layout: Layout,
    run_key: str,
    base: dict | None,
) -> None:
    """``warmup.epochs: 0``: the user's model as it is, the natural baseline, measured on the
    validation split and written where a trained warmup would be."""
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
        "run_key": run_key,
        "base_model": base,
    }
    write_json(layout.metrics_file("warmup"), metrics)
