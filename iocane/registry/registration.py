"""The register stage: a registered version with its tags, model card and alias.

The evidence goes into the hardening run (``iocane.registry.tracking``); the model is logged as
``pt2`` (torch.export, with a signature and an input example: ``iocane.registry.logged_model``),
which ``mlflow.pytorch.load_model`` and ``mlflow models serve`` read, and as a weights-only
``state_dict``, which is what iocane's own loaders read. The alias the new version earns is
decided in ``iocane.registry.aliases``. Registering the same evidence twice returns the version
already registered from it.

The MLflow server may stop in the middle (a restart, a network cut). A version is created
tagged with the evidence it is being made from (``evidence_key_pending``) and is complete once
its last evidence tag (``evidence_key``) is set; its alias decision is finished once its
``DECISION_TAG`` is. A failed attempt deletes its version, and when the server is gone too and
that fails, the next registration of the same evidence deletes it (evidence incomplete) or
finishes its alias decision (evidence complete). A server that stays unreachable through the
stage's retries ends the run with one line naming it (``RegistryUnreachable``); the rerun
registers the model already trained.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from iocane.base.config import Config
from iocane.base.files import read_json, write_json, write_text
from iocane.base.layout import Layout
from iocane.data.prepared import dvc_directory_hash, load_prepared
from iocane.model_files import describe_lineage, load_model
from iocane.pipeline import keys
from iocane.registry.aliases import DECISION_TAG, assign_alias, decision_finished
from iocane.registry.logged_model import log_servable_model
from iocane.registry.promotion import CHAMPION
from iocane.registry.tracking import (
    git_commit,
    log_run_evidence,
    run_name,
    server_must_answer,
    tracking_uri,
)
from iocane.reports.certified import certified_tags
from iocane.reports.costs import cost_summary
from iocane.reports.model_card import as_description, render_model_card
from iocane.reports.threats import profile_tag

log = logging.getLogger("iocane")

# What the version's tags link to, inside its run's artifacts.
ARTIFACT_LINKS = {
    "report": "reports/robustness.md",
    "model_card": "reports/model_card.md",
    "curves": "plots/robustness_curves.png",
    "examples": "plots/adversarial_examples.png",
    "alignment": "plots/perceptual_alignment.png",
    "threat_profile": "plots/threat_profile.png",
}
# Set when the version is created: the evidence an attempt is registering (see the docstring).
PENDING_TAG = "evidence_key_pending"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    alias: str | None
    run_id: str
    gate: str  # passed | failed
    reason: str  # why this alias (or none)
    experiment_id: str = ""  # for links into the MLflow UI


@dataclass(frozen=True)
class ChampionData:
    version: str
    data_fingerprint: str


def champion_data(config: Config, layout: Layout) -> ChampionData | None:
    """The data fingerprint the current ``champion`` was trained on; None without a champion."""
    client = MlflowClient(tracking_uri=tracking_uri(layout.root))
    try:
        version = client.get_model_version_by_alias(config.registry.model_name, CHAMPION)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return ChampionData(str(version.version), version.tags.get("data_fingerprint", ""))


def registered_from(client: MlflowClient, name: str, evidence_key: str) -> Registration | None:
    """The version already registered from the same evidence (the data, every stage's params and
    code, both models' weights: ``iocane.pipeline.keys.evidence_key``), so a rerun does not
    register a duplicate."""
    found = client.search_model_versions(f"name='{name}' and tags.evidence_key='{evidence_key}'")
    if not found:
        return None
    version = max(found, key=lambda found_version: int(found_version.version))
    number = str(version.version)
    aliases = client.get_registered_model(name).aliases
    held = sorted(alias for alias, holder in aliases.items() if str(holder) == number)
    return Registration(
        name,
        number,
        CHAMPION if CHAMPION in held else (held[0] if held else None),
        version.run_id,
        version.tags.get("gate", "failed"),
        f"already registered from the same evidence ({version.tags.get(DECISION_TAG, '')})",
        client.get_run(version.run_id).info.experiment_id,
    )


def decided_registration(
    client: MlflowClient, uri: str, name: str, evidence_key: str, max_clean_regression: float
) -> Registration | None:
    """``registered_from``, with its alias decided: an attempt that lost the server after the
    version's evidence was complete but before its alias decision finished, and so could not
    delete it either, left it undecided (no ``DECISION_TAG``); the decision is made now."""
    existing = registered_from(client, name, evidence_key)
    if existing is None or decision_finished(client, name, existing.version):
        return existing
    log.warning(
        "%s version %s: an earlier attempt registered it and could not finish its alias "
        "decision; deciding it now",
        name,
        existing.version,
    )
    assign_alias(client, uri, name, existing.version, max_clean_regression)
    return registered_from(client, name, evidence_key)


@dataclass(frozen=True)
class _StageEvidence:
    """What the earlier stages wrote, read once for the whole registration."""

    evaluation: dict
    verdict: dict
    training: dict
    meta: dict

    @classmethod
    def read(cls, layout: Layout) -> _StageEvidence:
        return cls(
            evaluation=read_json(layout.metrics_file("evaluate")),
            verdict=read_json(layout.metrics_file("gate")),
            training=read_json(layout.metrics_file("train")),
            meta=read_json(layout.prepared_meta),
        )

    @property
    def gate(self) -> str:
        return "passed" if self.verdict["passed"] else "failed"


def register_version(
    config: Config, layout: Layout, attempt_run_id: str | None = None
) -> Registration:
    """The ``register`` stage: log the evidence to MLflow, register a version with its tags and
    model card, set its alias. Registering the same evidence again returns the existing version.
    A failure after the version was created deletes it (the run is marked failed): no version
    is left without its evidence or with an alias it did not earn. The evidence goes into the
    attempt's run (``iocane.registry.attempts``) when there is one, else into a new run.
    ``RegistryUnreachable`` (from the transient error) when the server did not answer."""
    with server_must_answer(
        layout.root,
        when="while registering",
        then="the trained model is kept: once the server is back, run `iocane run` "
        "again to register it",
    ):
        return _register_version(config, layout, attempt_run_id)


def _register_version(config: Config, layout: Layout, attempt_run_id: str | None) -> Registration:
    evidence = _StageEvidence.read(layout)
    model, spec = load_model(layout.model_file("train"))
    name = config.registry.model_name
    uri = tracking_uri(layout.root)
    evidence_key = keys.evidence_key(config, layout)
    provenance = _provenance(layout, evidence)

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    _delete_unfinished(client, name, evidence_key)
    existing = decided_registration(
        client, uri, name, evidence_key, config.registry.max_clean_regression
    )
    if existing is not None:
        return _reuse(existing, layout)

    mlflow.set_experiment(name)
    with mlflow.start_run(
        run_id=attempt_run_id, run_name=None if attempt_run_id else run_name(config)
    ) as run:
        mlflow.set_tags(
            {
                **provenance,
                "gate": evidence.gate,
                "threat_model": config.train.norm,
                "eps": str(config.train.eps),
            }
        )
        log_run_evidence(config, layout, evidence.evaluation, evidence.verdict)
        model_info = log_servable_model(model, spec, load_prepared(layout))
        version = str(
            mlflow.register_model(
                model_info.model_uri, name, tags={PENDING_TAG: evidence_key}
            ).version
        )
        try:
            _complete_version(
                client,
                config,
                layout,
                evidence,
                version=version,
                run_id=run.info.run_id,
                provenance=provenance,
                evidence_key=evidence_key,
            )
            mlflow.set_tag("registered_version", f"{name}/{version}")
            decision = assign_alias(
                client, uri, name, version, config.registry.max_clean_regression
            )
        except BaseException:
            log.error("registering %s version %s failed; deleting the version", name, version)
            try:
                client.delete_model_version(name, version)
            except Exception as deleting:  # the server is gone: the next registration deletes it
                log.warning("could not delete %s version %s: %s", name, version, deleting)
            raise
    registration = Registration(
        name,
        version,
        decision.alias,
        run.info.run_id,
        evidence.gate,
        decision.reason,
        run.info.experiment_id,
    )
    write_json(layout.registration_file, asdict(registration))
    log.info(
        "registered %s version %s (gate %s) -> %s: %s",
        name,
        version,
        evidence.gate,
        decision.alias or "no alias",
        decision.reason,
    )
    return registration


def _delete_unfinished(client: MlflowClient, name: str, evidence_key: str) -> None:
    """Delete the versions an earlier attempt created from this evidence and could not complete
    nor delete (the server went away): they lack the ``evidence_key`` tag that completes one."""
    started = client.search_model_versions(f"name='{name}' and tags.{PENDING_TAG}='{evidence_key}'")
    for version in started:
        if "evidence_key" not in version.tags:
            log.warning(
                "deleting %s version %s: an earlier attempt created it from this evidence and "
                "could not complete it",
                name,
                version.version,
            )
            client.delete_model_version(name, str(version.version))


def _provenance(layout: Layout, evidence: _StageEvidence) -> dict[str, str]:
    """Where the version came from: its data, its code, its evaluation preset, and the user's
    weights it was hardened from (``base_model``, when ``model.weights`` gave them)."""
    provenance = {
        "data_fingerprint": evidence.meta["fingerprint"],
        "dvc_data_version": dvc_directory_hash(layout.prepared_dir),
        "dataset": evidence.meta["dataset"],
        "class_names": class_names_tag(evidence.meta),
        "git_commit": git_commit(layout.root),
        "suite_preset": evidence.evaluation["preset"],
    }
    warmup = layout.metrics_file("warmup")
    base = read_json(warmup).get("base_model") if warmup.exists() else None
    if base:
        provenance["base_model"] = describe_lineage(base)
    return provenance


def class_names_tag(meta: dict) -> str:
    """The classes in label order, comma separated, cut to fit an MLflow tag (5000 chars)."""
    names = ", ".join(meta.get("class_names", []))
    return names if len(names) <= 4000 else names[:3996] + " ..."


def _reuse(existing: Registration, layout: Layout) -> Registration:
    """The version already registered from this evidence, with its model card, as this run's."""
    _restore_model_card(existing.run_id, layout)
    write_json(layout.registration_file, asdict(existing))
    log.info(
        "%s version %s was already registered from this evidence (alias %s); not "
        "registering it again",
        existing.name,
        existing.version,
        existing.alias or "none",
    )
    return existing


def _complete_version(
    client: MlflowClient,
    config: Config,
    layout: Layout,
    evidence: _StageEvidence,
    *,
    version: str,
    run_id: str,
    provenance: dict[str, str],
    evidence_key: str,
) -> None:
    """The new version's model card (as its description and in its run) and its tags."""
    name = config.registry.model_name
    evaluation = evidence.evaluation
    links = {f"{key}_uri": f"runs:/{run_id}/{path}" for key, path in ARTIFACT_LINKS.items()}
    card = render_model_card(
        config,
        evaluation,
        evidence.verdict,
        evidence.meta,
        {**provenance, "mlflow_run": run_id},
        title=f"{name} v{version}",
        training=evidence.training,
        costs=cost_summary(layout, config.report.price_per_hour, evaluation),
    )
    write_text(layout.model_card_file, card)
    mlflow.log_artifact(str(layout.model_card_file), "reports")
    client.update_model_version(
        name, version, description=as_description(card, links["model_card_uri"])
    )
    tags = {
        **provenance,
        **links,
        "gate": evidence.gate,
        "threat_model": config.train.norm,
        "eps": str(config.train.eps),
        "clean_accuracy": f"{evaluation['clean_accuracy']:.6f}",
        "robust_accuracy": f"{evaluation['robust_accuracy']:.6f}",
        "natural_clean_accuracy": f"{evaluation['natural']['clean_accuracy']:.6f}",
        "trust_flags": str(len(evaluation["flags"])),
        # What it withstands beyond its threat model: threat (budget) accuracy, ...
        "threat_profile": profile_tag(evaluation.get("threats")),
        # What is proven beside what was measured: certified_accuracy, certified_band (where
        # evaluate.certify ran)
        **certified_tags(evaluation.get("certified")),
        "train_method": config.train.method,
        "checkpoint": _checkpoint_tag(evidence.training),
        "run_id": run_id,
        "params": json.dumps(config.to_dict(), separators=(",", ":")),
        # Last: its presence marks a version whose evidence is complete.
        "evidence_key": evidence_key,
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def _checkpoint_tag(training: dict) -> str:
    """Which epoch was registered, e.g. ``best: epoch 14 of 20``; says so after a collapse."""
    if "selected_epoch" not in training:
        return "last"
    tag = f"{training['selection']}: epoch {training['selected_epoch']} of {training['last_epoch']}"
    collapse = training.get("catastrophic_overfitting")
    if collapse:
        tag += f" (catastrophic overfitting at epoch {collapse['epoch']})"
    return tag


def _restore_model_card(run_id: str, layout: Layout) -> None:
    """reports/model_card.md of an existing version, from its run."""
    with tempfile.TemporaryDirectory() as scratch:
        card = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="reports/model_card.md", dst_path=scratch
        )
        write_text(layout.model_card_file, Path(card).read_text())
