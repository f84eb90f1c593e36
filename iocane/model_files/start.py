"""The model a warmup starts from: its spec (``model.name`` with ``model.mean`` / ``model.std``)
and the user's weights (``model.weights``: a state_dict file or a model URI), with the lineage
that the registry and the model card record.

Either way only the bare network's part is loaded (``state_dicts.network_part``), into the network
the module factory ``model.name`` builds (``models.build_model``): iocane's normalisation comes
from ``model.mean`` / ``model.std`` (or the data), never from the file, so the spec saved with the
model stays the truth.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from torch import nn

from iocane.base.config import ConfigError, ModelConfig
from iocane.base.files import sha256_file
from iocane.model_files.mlflow_store import state_dict_from_uri
from iocane.model_files.state_dicts import load_network_state, network_part, read_state_dict
from iocane.model_files.uris import is_model_uri
from models import ModelSpec

log = logging.getLogger(__name__)


def model_spec_for(config: ModelConfig, data_spec: ModelSpec) -> ModelSpec:
    """The data's spec for ``model.name`` (``PreparedData.model_spec``), with ``model.mean`` /
    ``model.std`` where given."""
    changes = {}
    for key in ("mean", "std"):
        values = getattr(config, key)
        if values is None:
            continue
        if len(values) != data_spec.in_channels:
            raise ConfigError(
                f"model.{key}: {len(values)} value(s) given but the data has "
                f"{data_spec.in_channels} channel(s)",
                key=f"model.{key}",
            )
        changes[key] = tuple(values)
    return dataclasses.replace(data_spec, **changes) if changes else data_spec


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
