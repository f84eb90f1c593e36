"""MLflow: one run with the whole evidence, a registered version with its tags, and the alias.

One MLflow run per hardening run, its figures under clear stage prefixes (``warmup/``,
``train/``, ``natural/``, ``robust_accuracy/``) rather than nested runs per stage: one place
for a reviewer to read everything, one run id to link from the version, and the same run whether
the pipeline ran as a Prefect flow or as ``dvc repro`` (where each stage is its own process). The
model is logged as ``pt2`` (torch.export; MLflow loads it with torch's restricted unpickler) and
as a weights-only ``state_dict``, which is what iocane's own loaders read.

Aliases follow ``iocane.registry.promotion``: a passing version becomes ``champion`` when it beats
the champion under the same threat model, else ``challenger``; a failed gate moves no alias. Every
move of ``champion`` (on registration, by ``iocane promote``, by a rollback) is recorded: who, when
and why as tags on the version, and the stack of champions as a tag on the registered
model, so a rollback restores the one before. Alias decisions run under a lock, so two flows
registering at once cannot both claim ``champion``.
"""

from __future__ import annotations

import csv
import getpass
import json
import logging
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from iocane.config import Config
from iocane.data.prepared import dvc_directory_hash
from iocane.files import read_json, write_json, write_text
from iocane.layout import Layout
from iocane.locks import exclusive_lock, registry_lock_path
from iocane.modelio import load_model
from iocane.pipeline.keys import stage_key
from iocane.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    Decision,
    Evidence,
    alias_for_new_version,
    eligibility_problem,
    promotion_refusal,
)
from iocane.reports.costs import cost_summary
from iocane.reports.model_card import as_description, render_model_card
from iocane.settings import settings

log = logging.getLogger("iocane")

# Registered-model tag: the versions that held `champion`, oldest first (a rollback pops it).
CHAMPION_STACK = "champion_stack"


class PromotionRefused(Exception):
    """A promotion or rollback the registry's rules do not allow; the message says why."""


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    alias: str | None
    run_id: str
    gate: str  # passed | failed
    reason: str  # why this alias (or none)
    experiment_id: str = ""  # for links into the MLflow UI


def tracking_uri(root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's sqlite registry."""
    return settings().tracking_uri or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def git_commit(root: Path) -> str:
    """The commit the code ran from, marked ``-dirty`` when the work tree had changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open() as stream:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)}
            for row in csv.DictReader(stream)
        ]


# --- aliases -------------------------------------------------------------------------------


def current_evidence(client: MlflowClient, name: str, alias: str) -> Evidence | None:
    """The evidence of the version holding ``alias``, or None when no version does."""
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return Evidence.from_tags(version.version, version.tags)


def champion_stack(client: MlflowClient, name: str) -> list[str]:
    """The versions that held ``champion``, oldest first."""
    return json.loads(client.get_registered_model(name).tags.get(CHAMPION_STACK, "[]"))


def _who() -> str:
    try:
        return settings().user or getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def gate_record_problem(client: MlflowClient, name: str, version: str) -> str | None:
    """Why ``version`` lacks a passing, unflagged gate record of its own, or None. The record is
    twofold and both halves must agree: the version's tags (complete: ``evidence_key`` is
    written last) and the metrics its MLflow run logged when it was registered."""
    model_version = client.get_model_version(name, version)
    problem = eligibility_problem(Evidence.from_tags(version, model_version.tags))
    if problem:
        return problem
    if "evidence_key" not in model_version.tags:
        return f"v{version}'s evidence is incomplete (it was not registered by iocane)"
    if not model_version.run_id:
        return f"v{version} has no MLflow run holding its gate record"
    metrics = client.get_run(model_version.run_id).data.metrics
    if metrics.get("gate_passed") != 1.0 or metrics.get("trust_flags") != 0.0:
        return (
            f"v{version}'s run {model_version.run_id} records gate_passed="
            f"{metrics.get('gate_passed')} and trust_flags={metrics.get('trust_flags')}, "
            "not a passing, unflagged gate: its tags disagree with its run"
        )
    return None


def _set_champion(client: MlflowClient, name: str, version: str) -> None:
    """The one place that moves ``champion``: only onto a version with a passing, unflagged
    gate record (``gate_record_problem``), whichever command asked."""
    problem = gate_record_problem(client, name, version)
    if problem:
        raise PromotionRefused(f"refused: {problem}")
    client.set_registered_model_alias(name, CHAMPION, version)


def _crown(client: MlflowClient, name: str, version: str, action: str, reason: str) -> None:
    """Move ``champion`` to ``version`` and record who, when and why. Under the registry lock.
    MLflow moves an alias in one call: a reader sees the old champion or the new one."""
    stack = champion_stack(client, name)
    if action == "rollback":
        stack.pop()
    else:
        stack.append(version)
    _set_champion(client, name, version)
    client.set_registered_model_tag(name, CHAMPION_STACK, json.dumps(stack[-100:]))
    for key, value in {
        "champion_action": action,
        "champion_by": _who(),
        "champion_at": _now(),
        "champion_reason": reason,
    }.items():
        client.set_model_version_tag(name, version, key, value)
    challenger = current_evidence(client, name, CHALLENGER)
    if challenger is not None and challenger.version == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def assign_alias(
    client: MlflowClient, uri: str, name: str, version: str, max_clean_regression: float
) -> Decision:
    """Set the alias a new version earns (``iocane.registry.promotion``), under the registry lock.
    If a registry call fails halfway, ``champion`` goes back to the version that held it."""
    with exclusive_lock(registry_lock_path(uri)):
        candidate = Evidence.from_tags(version, client.get_model_version(name, version).tags)
        champion = current_evidence(client, name, CHAMPION)
        decision = alias_for_new_version(candidate, champion, max_clean_regression)
        client.set_model_version_tag(name, version, "alias_reason", decision.reason)
        try:
            if decision.alias == CHAMPION:
                _crown(client, name, version, "registered", decision.reason)
            elif decision.alias == CHALLENGER:
                client.set_registered_model_alias(name, CHALLENGER, version)
        except BaseException:
            if champion is not None and decision.alias == CHAMPION:
                _set_champion(client, name, champion.version)
            raise
    return decision


def promote(client: MlflowClient, uri: str, name: str, version: str, reason: str) -> str:
    """A reviewer makes ``version`` champion. Re-reads its gate evidence and raises
    ``PromotionRefused`` for a failed, flagged or incomparable version."""
    with exclusive_lock(registry_lock_path(uri)):
        candidate = Evidence.from_tags(version, client.get_model_version(name, version).tags)
        champion = current_evidence(client, name, CHAMPION)
        refusal = promotion_refusal(candidate, champion)
        if refusal:
            raise PromotionRefused(f"refused: {refusal}")
        if champion is not None and champion.version == candidate.version:
            return f"{name} v{version} is already champion"
        _crown(client, name, candidate.version, "promoted", reason)
    was = f" (was v{champion.version})" if champion else ""
    return f"{name} v{candidate.version} is now champion{was}"


def rollback(client: MlflowClient, uri: str, name: str, reason: str) -> str:
    """Return ``champion`` to the version that held it before the current one."""
    with exclusive_lock(registry_lock_path(uri)):
        champion = current_evidence(client, name, CHAMPION)
        if champion is None:
            raise PromotionRefused(f"refused: {name} has no champion to roll back")
        stack = champion_stack(client, name)
        if not stack or stack[-1] != champion.version:
            # `champion` was moved outside iocane (in the MLflow UI): count it as the newest.
            stack.append(champion.version)
            client.set_registered_model_tag(name, CHAMPION_STACK, json.dumps(stack))
        if len(stack) < 2:
            raise PromotionRefused(
                f"refused: v{champion.version} is the first champion of {name}; there is no "
                "earlier one to return to"
            )
        previous = stack[-2]
        _crown(client, name, previous, "rollback", reason)
        for key, value in {
            "demoted_at": _now(),
            "demoted_by": _who(),
            "demoted_reason": reason,
        }.items():
            client.set_model_version_tag(name, champion.version, key, value)
    return f"{name}: champion rolled back from v{champion.version} to v{previous}"


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


# --- the register stage --------------------------------------------------------------------


def run_name(config: Config) -> str:
    """The MLflow run name of a hardening run, e.g. ``harden-Linf-eps0.1``."""
    return f"harden-{config.train.norm}-eps{config.train.eps:g}"


def evaluation_metrics(evaluation: dict, verdict: dict) -> dict[str, float]:
    """The final figures a run logs: worst case, per attack, natural baseline, gate."""
    natural = evaluation["natural"]
    return {
        "clean_accuracy": evaluation["clean_accuracy"],
        "robust_accuracy": evaluation["robust_accuracy"],
        "natural/clean_accuracy": natural["clean_accuracy"],
        "natural/robust_accuracy": natural["robust_accuracy"],
        "clean_drop": verdict["clean_drop"],
        "trust_flags": len(evaluation["flags"]),
        "gate_passed": float(verdict["passed"]),
        **{f"robust_accuracy/{k}": v for k, v in evaluation["attacks"].items()},
        **{f"natural/robust_accuracy/{k}": v for k, v in natural["attacks"].items()},
    }


def _log_run_evidence(config: Config, layout: Layout, evaluation: dict, verdict: dict) -> None:
    """Params, per-epoch and final metrics, and the files, into the active run."""
    mlflow.log_params(flatten(config.to_dict()))
    for stage in ("warmup", "train"):
        for row in _read_history(layout.history_file(stage)):
            step = int(row.pop("epoch"))
            mlflow.log_metrics({f"{stage}/{key}": value for key, value in row.items()}, step)
    mlflow.log_metrics(evaluation_metrics(evaluation, verdict))
    costs = cost_summary(layout, config.report.price_per_hour, evaluation)
    mlflow.log_metrics({f"cost/{key}": value for key, value in costs.items() if value is not None})
    for stage in ("warmup", "train", "evaluate", "gate"):
        mlflow.log_artifact(str(layout.metrics_file(stage)), "metrics")
    for path in (
        layout.history_file("warmup"),
        layout.history_file("train"),
        layout.curves_file,
        layout.curves_plot,
        layout.examples_plot,
        layout.alignment_plot,
    ):
        mlflow.log_artifact(str(path), "plots")
    mlflow.log_artifact(str(layout.report_file), "reports")
    mlflow.log_artifact(str(layout.prepared_meta), "data")
    mlflow.log_artifact(str(layout.model_file("train")), "weights")
    # The natural baseline too: `iocane evaluate` re-runs the comparison and the transfer
    # attack from it.
    mlflow.log_artifact(str(layout.model_file("warmup")), "weights/natural")


def registered_from(client: MlflowClient, name: str, evidence_key: str) -> Registration | None:
    """The version already registered from exactly this evidence (model, evaluation, verdict,
    params and code: ``iocane.pipeline.keys.stage_key``), so a rerun does not register a
    duplicate."""
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
        f"already registered from the same evidence ({version.tags.get('alias_reason', '')})",
        client.get_run(version.run_id).info.experiment_id,
    )


def register_version(
    config: Config, layout: Layout, attempt_run_id: str | None = None
) -> Registration:
    """The ``register`` stage: log the evidence to MLflow, register a version with its tags and
    model card, set its alias. Registering the same evidence again returns the existing version.
    A failure after the version was created deletes it (the run is marked failed): no version
    is left without its evidence or with an alias it did not earn. The evidence goes into the
    attempt's run (``iocane.registry.attempts``) when there is one, else into a new run."""
    evaluation = read_json(layout.metrics_file("evaluate"))
    verdict = read_json(layout.metrics_file("gate"))
    training = read_json(layout.metrics_file("train"))
    meta = read_json(layout.prepared_meta)
    model, spec = load_model(layout.model_file("train"))
    gate = "passed" if verdict["passed"] else "failed"
    name = config.registry.model_name
    uri = tracking_uri(layout.root)
    evidence_key = stage_key("register", config, layout)
    provenance = {
        "data_fingerprint": meta["fingerprint"],
        "dvc_data_version": dvc_directory_hash(layout.prepared_dir),
        "dataset": meta["dataset"],
        "git_commit": git_commit(layout.root),
        "suite_preset": evaluation["preset"],
    }

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    existing = registered_from(client, name, evidence_key)
    if existing is not None:
        _restore_model_card(existing.run_id, layout)
        write_json(layout.registration_file, asdict(existing))
        log.info(
            "%s version %s was already registered from this evidence (alias %s); not "
            "registering it again",
            name,
            existing.version,
            existing.alias or "none",
        )
        return existing

    mlflow.set_experiment(name)
    with mlflow.start_run(
        run_id=attempt_run_id, run_name=None if attempt_run_id else run_name(config)
    ) as run:
        mlflow.set_tags(
            {
                **provenance,
                "gate": gate,
                "threat_model": config.train.norm,
                "eps": str(config.train.eps),
            }
        )
        _log_run_evidence(config, layout, evaluation, verdict)
        example = np.zeros((2, spec.in_channels, spec.image_size, spec.image_size), np.float32)
        model_info = mlflow.pytorch.log_model(
            model, name="model", input_example=example, serialization_format="pt2"
        )
        version = str(mlflow.register_model(model_info.model_uri, name).version)
        try:
            links = {
                f"{key}_uri": f"runs:/{run.info.run_id}/{path}"
                for key, path in {
                    "report": "reports/robustness.md",
                    "model_card": "reports/model_card.md",
                    "curves": "plots/robustness_curves.png",
                    "examples": "plots/adversarial_examples.png",
                    "alignment": "plots/perceptual_alignment.png",
                }.items()
            }
            card = render_model_card(
                config,
                evaluation,
                verdict,
                meta,
                {**provenance, "mlflow_run": run.info.run_id},
                title=f"{name} v{version}",
                training=training,
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
                "gate": gate,
                "threat_model": config.train.norm,
                "eps": str(config.train.eps),
                "clean_accuracy": f"{evaluation['clean_accuracy']:.6f}",
                "robust_accuracy": f"{evaluation['robust_accuracy']:.6f}",
                "natural_clean_accuracy": f"{evaluation['natural']['clean_accuracy']:.6f}",
                "trust_flags": str(len(evaluation["flags"])),
                "train_method": config.train.method,
                "checkpoint": _checkpoint_tag(training),
                "run_id": run.info.run_id,
                "params": json.dumps(config.to_dict(), separators=(",", ":")),
                # Last: its presence marks a version whose evidence is complete.
                "evidence_key": evidence_key,
            }
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, value)
            mlflow.set_tag("registered_version", f"{name}/{version}")
            decision = assign_alias(
                client, uri, name, version, config.registry.max_clean_regression
            )
        except BaseException:
            log.error("registering %s version %s failed; deleting the version", name, version)
            client.delete_model_version(name, version)
            raise
    registration = Registration(
        name,
        version,
        decision.alias,
        run.info.run_id,
        gate,
        decision.reason,
        run.info.experiment_id,
    )
    write_json(layout.registration_file, asdict(registration))
    log.info(
        "registered %s version %s (gate %s) -> %s: %s",
        name,
        version,
        gate,
        decision.alias or "no alias",
        decision.reason,
    )
    return registration


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
