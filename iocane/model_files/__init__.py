"""Model files: the one entry point for loading and saving a model, whatever its source.

Training, evaluation and the registry import from here, never from the modules below:

- iocane's own file (an architecture spec and a state_dict): ``save_model`` / ``load_model``; as a
  warmup's start, its ``net.`` part.
- a state_dict ``.pt`` / ``.pth`` / ``.safetensors``: loaded into the network ``model.name``
  builds, to evaluate or to start from (``save_state_dict`` writes one).
- a ``torch.export`` ``.pt2``: evaluated as it is (it has no state_dict to start a warmup from).
- an MLflow model URI (``models:/NAME@ALIAS``, ``models:/NAME/N``, ``runs:/RUN_ID/PATH``): an
  iocane version by its own file, any other PyTorch model as it is; as a start, its weights.
- a module factory (``model.name``: ours, ``torchvision:<builder>``, ``timm:<name>``,
  ``<module>:<factory>``): ``models.build_model`` builds the network a state_dict fills.

``open_model`` takes any of them to evaluate (``iocane evaluate``); ``load_base_weights`` loads
``model.weights`` into a warmup's fresh model and says where it came from (``describe_lineage``).

Saving: ``save_model`` (iocane's file), ``save_state_dict`` (``.pt`` or ``.safetensors``),
``log_version_model_files`` (a version's two iocane files in its run) and ``log_servable`` (the
``pt2`` model ``mlflow models serve`` serves).

Modules: ``iocane_file`` (iocane's own file), ``state_dicts`` (bare state_dicts, ``.safetensors``
too), ``uris`` (what a model URI names), ``mlflow_store`` (models and weights at a URI, a
version's files), ``servable`` (the logged ``pt2`` model), ``start`` (``model.weights`` and its
lineage), ``given`` (a whole model for ``iocane evaluate``).

Names are loaded on first use: the stage cache key (``iocane.pipeline.keys``) reads URIs without
importing torch or MLflow, and bad params fail before either loads.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iocane.model_files.given import AsGiven, LoadedModel, open_model
    from iocane.model_files.iocane_file import is_iocane_file, load_model, save_model
    from iocane.model_files.mlflow_store import (
        IOCANE_MODEL_ARTIFACT,
        NATURAL_MODEL_ARTIFACT,
        check_pytorch_model,
        iocane_model_file,
        log_version_model_files,
        mlflow_pytorch,
        state_dict_from_uri,
        state_digest,
        version_model_file,
    )
    from iocane.model_files.servable import log_servable, model_signature
    from iocane.model_files.start import describe_lineage, load_base_weights, model_spec_for
    from iocane.model_files.state_dicts import (
        load_network_state,
        network_part,
        read_state_dict,
        save_state_dict,
    )
    from iocane.model_files.uris import (
        ResolvedUri,
        client_for,
        is_model_uri,
        registered_version,
        resolve_model_uri,
    )

# Each public name and the module that holds it.
_HOMES = {
    "AsGiven": "given",
    "LoadedModel": "given",
    "open_model": "given",
    "is_iocane_file": "iocane_file",
    "load_model": "iocane_file",
    "save_model": "iocane_file",
    "IOCANE_MODEL_ARTIFACT": "mlflow_store",
    "NATURAL_MODEL_ARTIFACT": "mlflow_store",
    "log_version_model_files": "mlflow_store",
    "version_model_file": "mlflow_store",
    "log_servable": "servable",
    "model_signature": "servable",
    "check_pytorch_model": "mlflow_store",
    "iocane_model_file": "mlflow_store",
    "mlflow_pytorch": "mlflow_store",
    "state_dict_from_uri": "mlflow_store",
    "state_digest": "mlflow_store",
    "describe_lineage": "start",
    "load_base_weights": "start",
    "model_spec_for": "start",
    "load_network_state": "state_dicts",
    "network_part": "state_dicts",
    "read_state_dict": "state_dicts",
    "save_state_dict": "state_dicts",
    "ResolvedUri": "uris",
    "client_for": "uris",
    "is_model_uri": "uris",
    "registered_version": "uris",
    "resolve_model_uri": "uris",
}

__all__ = [
    "IOCANE_MODEL_ARTIFACT",
    "NATURAL_MODEL_ARTIFACT",
    "AsGiven",
    "LoadedModel",
    "ResolvedUri",
    "check_pytorch_model",
    "client_for",
    "describe_lineage",
    "iocane_model_file",
    "is_iocane_file",
    "is_model_uri",
    "load_base_weights",
    "load_model",
    "load_network_state",
    "log_servable",
    "log_version_model_files",
    "mlflow_pytorch",
    "model_signature",
    "model_spec_for",
    "network_part",
    "open_model",
    "read_state_dict",
    "registered_version",
    "resolve_model_uri",
    "save_model",
    "save_state_dict",
    "state_dict_from_uri",
    "state_digest",
    "version_model_file",
]


def __getattr__(name: str) -> Any:
    """Import the module that holds ``name`` on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value
