"""``iocane evaluate`` on any model: a version iocane registered (``iocane.registry.reevaluation``,
as always), any other MLflow PyTorch model (``models:/...``, ``runs:/...``), or a file (a
state_dict, a ``.safetensors``, a ``torch.export`` ``.pt2``, an iocane model file), each loaded by
``iocane.model_files.open_model``.

A model iocane did not train has no natural model: it is evaluated alone (the report has no
natural column and the suite no transfer attack) unless a baseline is given (``--baseline-uri`` /
``--baseline-file``). Its threat model is the params' (``train.norm``, ``train.eps``), its data the
prepared data of the params. The report, curves, figures, trust flags and a model card
(``reports/model_card.md``) are written as for a run; a model from the registry or a run gets
them logged back to its run (and a registered version its tags), a file nothing in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iocane.base.config import Config, ConfigError
from iocane.base.files import confined, write_text
from iocane.base.layout import Layout
from iocane.base.settings import resolve_device
from iocane.data.prepared import PreparedData, load_prepared
from iocane.model_files import (
    LoadedModel,
    ResolvedUri,
    client_for,
    open_model,
    registered_version,
    resolve_model_uri,
)
from iocane.registry.reevaluation import log_back, reevaluate
from iocane.registry.tracking import git_commit
from iocane.reports.evaluation import evaluate_and_report
from iocane.reports.model_card import render_evaluation_card

# How the report, the figures and the card name the two models of such an evaluation.
LABELS = {"hardened": "evaluated", "natural": "baseline"}


@dataclass(frozen=True)
class Evaluated:
    """What ``iocane evaluate`` prints: the model as given, the version or run it resolved to,
    the figures, and where the report is."""

    model: str
    version: str | None
    run_id: str | None
    metrics: dict
    report_file: Path


def evaluate_any(
    config: Config,
    *,
    root: Path,
    model_uri: str | None = None,
    model_file: Path | None = None,
    baseline_uri: str | None = None,
    baseline_file: Path | None = None,
    out: Path | None = None,
) -> Evaluated:
    """Evaluate the model ``model_uri`` or ``model_file`` names (exactly one), beside the
    baseline if one is given, on the params' prepared data; write and log the results."""
    given_baseline = baseline_uri is not None or baseline_file is not None
    resolved = resolve_model_uri(model_uri, root) if model_uri is not None else None
    if resolved is not None and resolved.is_iocane_version:
        if given_baseline:
            raise ConfigError(
                f"{model_uri} is an iocane version: it is evaluated beside its own natural "
                "model; --baseline-uri / --baseline-file are for other models"
            )
        client, version = registered_version(resolved.uri, root)
        done = reevaluate(config, client, version, root=root, out=out)
        return Evaluated(resolved.uri, done.version, version.run_id, done.metrics, done.report_file)
    name = _report_name(resolved, model_file)
    default = Path("reports", "evaluations", name)
    where = "--out" if out is not None else "the report directory"
    layout = Layout(confined(out if out is not None else default, root, where))
    data = load_prepared(Layout(root))
    loaded = _load(config, root, data, uri=model_uri, file=model_file)
    reference = (
        _load(config, root, data, uri=baseline_uri, file=baseline_file) if given_baseline else None
    )
    metrics = evaluate_and_report(
        config, loaded.model, reference and reference.model, data, layout, LABELS
    )
    provenance = _provenance(loaded, reference, data, root, config)
    card = render_evaluation_card(metrics, data.meta, provenance, title=name, source=loaded.source)
    write_text(layout.model_card_file, card)
    if resolved is not None:
        version = registered_version(resolved.uri, root)[1] if resolved.version else None
        log_back(client_for(root), resolved.run_id, version, layout, config=config, metrics=metrics)
    return Evaluated(
        loaded.source,
        resolved.version if resolved else None,
        resolved.run_id if resolved else None,
        metrics,
        layout.report_file,
    )


def _report_name(resolved: ResolvedUri | None, model_file: Path | None) -> str:
    """The report's directory under reports/evaluations: NAME-vN, run-ID-PATH, or the file's
    stem."""
    if resolved is None:
        assert model_file is not None
        return Path(model_file).stem
    if resolved.version is not None:
        return f"{resolved.name}-v{resolved.version}"
    return f"run-{resolved.run_id}-{str(resolved.artifact_path).replace('/', '-')}"


def _load(
    config: Config, root: Path, data: PreparedData, *, uri: str | None, file: Path | None
) -> LoadedModel:
    source = uri if uri is not None else file
    assert source is not None
    data_spec = data.model_spec(config.model)
    return open_model(
        source, root=root, device=resolve_device(), data_spec=data_spec, config=config.model
    )


def _provenance(
    loaded: LoadedModel,
    reference: LoadedModel | None,
    data: PreparedData,
    root: Path,
    config: Config,
) -> dict[str, str]:
    """The card's provenance: what was evaluated, beside what, on which data, by which code."""
    provenance = {
        "model": _described(loaded),
        "data_fingerprint": data.meta["fingerprint"],
        "dataset": data.meta["dataset"],
        "suite_preset": config.evaluate.preset,
        "threat_model": f"{config.train.norm} eps {config.train.eps:g} (train.norm, train.eps)",
        "git_commit": git_commit(root),
    }
    if reference is not None:
        provenance["baseline"] = _described(reference)
    return provenance


def _described(loaded: LoadedModel) -> str:
    if loaded.resolved is not None:
        return f"{loaded.source} ({loaded.resolved.describe()})"
    return f"{loaded.source} (sha256 {loaded.lineage['sha256']})"
