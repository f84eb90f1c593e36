"""Models and weights at MLflow model URIs, from the project's tracking store: any PyTorch-flavour
model (``mlflow.pytorch.load_model``, on the CPU), or, for a version iocane registered, its own
model file (``weights/model.pt`` in its run, which holds the architecture spec).

The warmup reads a URI's weights here for ``model.weights`` (``iocane.model_files.start``);
``iocane evaluate`` loads the whole model (``iocane.model_files.given``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from iocane.base.errors import ModelUriError
from iocane.base.settings import tracking_uri
from iocane.model_files.iocane_file import load_model
from iocane.model_files.uris import ResolvedUri, resolve_model_uri

# Where a version iocane registered keeps its own model files, in its run's artifacts: the
# hardened model, and the natural baseline that `iocane evaluate` compares it with and runs the
# transfer attack from.
IOCANE_MODEL_ARTIFACT = "weights/model.pt"
NATURAL_MODEL_ARTIFACT = "weights/natural/model.pt"


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state_dict's names, dtypes, shapes and values: the same weights give the same
    digest whatever file or store they came from."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def _project_store(root: Path) -> Iterator[None]:
    """MLflow's module-level loaders (``get_model_info``, ``pytorch.load_model``) read the
    global tracking and registry URIs, which MLflow also exports to the environment for
    subprocesses. Point them at the project's store for the call, then put back the globals and
    the environment, so that nothing later in the process, or started by it, inherits them."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    variables = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    environment = {name: os.environ.get(name) for name in variables}
    # What was set explicitly, not the defaults the public getters resolve to.
    saved_tracking, saved_registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        mlflow.set_registry_uri(saved_registry)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_version_model_files(hardened: Path, natural: Path) -> None:
    """Log the two iocane model files into the active run, where ``version_model_file`` finds
    them (``IOCANE_MODEL_ARTIFACT``, ``NATURAL_MODEL_ARTIFACT``); each must be named
    ``model.pt``, as the stages write them."""
    import mlflow

    for path, artifact in ((hardened, IOCANE_MODEL_ARTIFACT), (natural, NATURAL_MODEL_ARTIFACT)):
        folder, _, name = artifact.rpartition("/")
        assert path.name == name, f"{path} is logged as {artifact}"
        mlflow.log_artifact(str(path), folder)


def version_model_file(run_id: str, root: Path, artifact: str = IOCANE_MODEL_ARTIFACT) -> Path:
    """The local copy of one of an iocane version's model files (its run's ``artifact``)."""
    import mlflow

    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact, tracking_uri=tracking_uri(root)
        )
    )


def iocane_model_file(resolved: ResolvedUri, root: Path) -> Path:
    """The local copy of an iocane version's own model file (``IOCANE_MODEL_ARTIFACT``)."""
    assert resolved.run_id is not None  # is_iocane_version: a version with its run
    return version_model_file(resolved.run_id, root)


def check_pytorch_model(resolved: ResolvedUri, root: Path) -> None:
    """That the URI holds an MLflow model of the PyTorch flavour (reads its MLmodel file only);
    a ``ModelUriError`` naming the URI otherwise."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolved.uri
    try:
        with _project_store(root):
            flavors = mlflow.models.get_model_info(uri).flavors
    except (MlflowException, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        where = f"{resolved.describe()} has" if resolved.version else "the run has"
        raise ModelUriError(f"{uri}: {where} no MLflow model there ({first})") from None
    if "pytorch" not in flavors:
        others = ", ".join(sorted(set(flavors) - {"python_function"})) or "unknown"
        raise ModelUriError(f"{uri} is an MLflow {others} model, not a PyTorch one")


def mlflow_pytorch(resolved: ResolvedUri, root: Path) -> nn.Module:
    """The PyTorch model at an MLflow URI, on the CPU; a named error when the URI holds no
    MLflow model or one of another flavour."""
    import mlflow

    check_pytorch_model(resolved, root)
    uri = resolved.uri
    try:
        with _project_store(root):
            loaded = mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as error:  # unpickling a model of a missing class, a bad pt2 archive...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelUriError(f"{uri}: the PyTorch model does not load: {first}") from None
    if not isinstance(loaded, nn.Module):
        raise ModelUriError(f"{uri} holds a {type(loaded).__name__}, not a torch nn.Module")
    return loaded


def state_dict_from_uri(uri: str, root: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights at a model URI as a state_dict (an iocane version's or iocane-wrapped model's
    keys as they are: ``network_part`` takes their ``net.`` part), with the lineage: the URI,
    what it resolved to, and the weights' ``state_sha256``."""
    resolved = resolve_model_uri(uri, root)
    if resolved.is_iocane_version:  # its own file: the wrapped model's keys, net.* and normalize.*
        state = dict(load_model(iocane_model_file(resolved, root))[0].state_dict())
    else:
        state = dict(mlflow_pytorch(resolved, root).state_dict())
    return state, {**resolved.lineage(), "state_sha256": state_digest(state)}
