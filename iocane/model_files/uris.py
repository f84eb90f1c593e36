"""MLflow model URIs: what ``models:/NAME@ALIAS``, ``models:/NAME/N`` and ``runs:/RUN_ID/PATH``
name in the project's tracking store (``iocane.base.settings.tracking_uri``).

Everything that reads a model URI resolves it here, the same way: the warmup (``model.weights``),
the warmup's stage cache key (``iocane.pipeline.keys``), ``iocane evaluate`` and the registry. A
URI that names nothing is a ``ModelUriError`` (exit 2) naming the URI. Neither MLflow nor torch is
imported at module level: bad params must fail before they load, and the cache key needs neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from iocane.base.errors import ModelUriError
from iocane.base.settings import tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

FORMS = "models:/NAME@ALIAS, models:/NAME/N or runs:/RUN_ID/PATH"

# The tags every version iocane registers carries (DESIGN.md's contract): a version with them
# has iocane's own model files in its run (weights/model.pt, weights/natural/model.pt).
IOCANE_VERSION_TAGS = frozenset({"threat_model", "eps", "data_fingerprint"})


def is_model_uri(text: str | None) -> bool:
    """Whether ``text`` is an MLflow model URI rather than a file path."""
    return bool(text) and str(text).startswith(("models:/", "runs:/"))


@dataclass(frozen=True)
class ResolvedUri:
    """What a model URI resolved to: a registered version (``name``, ``version``, its run) or a
    run's artifact (``run_id``, ``artifact_path``)."""

    uri: str
    run_id: str | None
    name: str | None = None
    version: str | None = None
    artifact_path: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_iocane_version(self) -> bool:
        """A version iocane registered: it has iocane's model files and threat-model tags."""
        has_tags = set(self.tags) >= IOCANE_VERSION_TAGS
        return self.version is not None and bool(self.run_id) and has_tags

    def describe(self) -> str:
        """E.g. ``mine version 3, run 1f2e...`` or ``run 1f2e..., artifact model``."""
        if self.version is not None:
            run = f", run {self.run_id}" if self.run_id else ""
            return f"{self.name} version {self.version}{run}"
        return f"run {self.run_id}, artifact {self.artifact_path}"

    def lineage(self) -> dict[str, str | None]:
        """The URI and what it resolved to, as ``metrics/warmup.json`` records it."""
        found = {
            "uri": self.uri,
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "artifact_path": self.artifact_path,
        }
        return {key: value for key, value in found.items() if value is not None}


def client_for(root: Path) -> MlflowClient:
    """A client of the project's tracking store and registry."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(root), registry_uri=tracking_uri(root))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def registered_version(uri: str, root: Path) -> tuple[MlflowClient, ModelVersion]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/N`` as (client, version); another shape, or a
    name, alias or version the registry does not hold, is a ``ModelUriError``."""
    from mlflow.exceptions import MlflowException

    if not uri.startswith("models:/"):
        raise ModelUriError(f"model URI {uri!r} must look like {FORMS}")
    client = client_for(root)
    body = uri.removeprefix("models:/")
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return client, client.get_model_version_by_alias(name, alias)
        name, version = body.rsplit("/", 1)
        return client, client.get_model_version(name, version)
    except (MlflowException, ValueError) as error:
        raise ModelUriError(f"no registered model at {uri}: {_first_line(error)}") from None


def resolve_model_uri(uri: str, root: Path) -> ResolvedUri:
    """What ``uri`` names now (an alias resolves to its current version); a ``ModelUriError``
    when it names nothing. A ``runs:/`` URI is checked for its run, not yet for its artifact
    (loading it says when the run has no model at that path)."""
    if uri.startswith("runs:/"):
        from mlflow.exceptions import MlflowException

        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        if not run_id or not path.strip("/"):
            raise ModelUriError(f"model URI {uri!r} must look like {FORMS}")
        try:
            client_for(root).get_run(run_id)
        except MlflowException as error:
            raise ModelUriError(f"no run at {uri}: {_first_line(error)}") from None
        return ResolvedUri(uri=uri, run_id=run_id, artifact_path=path.strip("/"))
    if not uri.startswith("models:/"):
        raise ModelUriError(f"model URI {uri!r} must look like {FORMS}")
    _, version = registered_version(uri, root)
    return ResolvedUri(
        uri=uri,
        run_id=version.run_id or None,
        name=version.name,
        version=str(version.version),
        tags=dict(version.tags),
    )
