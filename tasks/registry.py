"""MLflow: one run with the whole evidence, a registered version with its tags, and the alias.

One MLflow run per hardening run, its figures under clear stage prefixes (``warmup/``,
``train/``, ``natural/``, ``robust_accuracy/``): one place for a reviewer to read everything,
and the same run whether the pipeline ran as a Prefect flow or as ``dvc repro``. The model is
logged as ``pt2`` (torch.export, free of pickle) and as a weights-only ``state_dict``.

Promotion: a version whose gate passed becomes ``champion`` when no champion exists or when it is
at least as robust (worst case) as the champion under the same threat model and eps; otherwise
``challenger``. A failed gate registers the version tagged ``gate=failed`` and moves no alias.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from iocane.config import Config
from iocane.files import read_json, write_json
from iocane.layout import Layout
from iocane.modelio import load_model

log = logging.getLogger("iocane")

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    alias: str | None
    run_id: str
    gate: str  # passed | failed
    reason: str  # why this alias (or none)


def tracking_uri(root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's sqlite registry."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


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


def choose_alias(
    client: MlflowClient, name: str, passed: bool, norm: str, eps: float, robust: float
) -> tuple[str | None, str]:
    """Which alias a new version earns, and why."""
    if not passed:
        return None, "gate failed: nothing promoted"
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return CHAMPION, "first version to pass the gate"
    tags = champion.tags
    if tags.get("threat_model") != norm or not math.isclose(float(tags.get("eps", "nan")), eps):
        return CHALLENGER, (
            f"champion v{champion.version} was judged under {tags.get('threat_model')} eps "
            f"{tags.get('eps')}, this version under {norm} eps {eps:g}: not compared"
        )
    champion_robust = float(tags["robust_accuracy"])
    if robust >= champion_robust:
        return CHAMPION, (
            f"robust accuracy {robust:.4f} >= champion v{champion.version}'s {champion_robust:.4f}"
        )
    return CHALLENGER, (
        f"robust accuracy {robust:.4f} < champion v{champion.version}'s {champion_robust:.4f}"
    )


def run_register(config: Config, layout: Layout) -> Registration:
    """The ``register`` stage: log the evidence to MLflow, register a version, set its alias."""
    evaluation = read_json(layout.metrics_file("evaluate"))
    verdict = read_json(layout.metrics_file("gate"))
    meta = read_json(layout.prepared_meta)
    model, spec = load_model(layout.model_file("train"))
    gate = "passed" if verdict["passed"] else "failed"
    name = config.registry.model_name
    commit = git_commit(layout.root)

    mlflow.set_tracking_uri(tracking_uri(layout.root))
    mlflow.set_experiment(name)
    client = MlflowClient()
    with mlflow.start_run(run_name=f"harden-{config.train.norm}-eps{config.train.eps:g}") as run:
        mlflow.log_params(flatten(config.to_dict()))
        mlflow.set_tags(
            {
                "data_fingerprint": meta["fingerprint"],
                "dataset": meta["dataset"],
                "git_commit": commit,
                "gate": gate,
                "threat_model": config.train.norm,
                "eps": str(config.train.eps),
            }
        )
        for stage in ("warmup", "train"):
            for row in _read_history(layout.history_file(stage)):
                step = int(row.pop("epoch"))
                mlflow.log_metrics({f"{stage}/{key}": value for key, value in row.items()}, step)
        final = {
            "clean_accuracy": evaluation["clean_accuracy"],
            "robust_accuracy": evaluation["robust_accuracy"],
            "natural/clean_accuracy": evaluation["natural"]["clean_accuracy"],
            "natural/robust_accuracy": evaluation["natural"]["robust_accuracy"],
            "clean_drop": verdict["clean_drop"],
            "trust_flags": len(evaluation["flags"]),
            "gate_passed": float(verdict["passed"]),
        }
        final.update({f"robust_accuracy/{k}": v for k, v in evaluation["attacks"].items()})
        mlflow.log_metrics(final)
        for path in (
            layout.metrics_file("warmup"),
            layout.metrics_file("train"),
            layout.metrics_file("evaluate"),
            layout.metrics_file("gate"),
        ):
            mlflow.log_artifact(str(path), "metrics")
        for path in (
            layout.history_file("warmup"),
            layout.history_file("train"),
            layout.curves_file,
            layout.curves_plot,
            layout.examples_plot,
        ):
            mlflow.log_artifact(str(path), "plots")
        mlflow.log_artifact(str(layout.report_file), "reports")
        mlflow.log_artifact(str(layout.prepared_meta), "data")
        mlflow.log_artifact(str(layout.model_file("train")), "weights")
        # The natural baseline too: `iocane evaluate` re-runs the comparison and the transfer
        # attack from it.
        mlflow.log_artifact(str(layout.model_file("warmup")), "weights/natural")
        example = np.zeros((2, spec.in_channels, spec.image_size, spec.image_size), np.float32)
        model_info = mlflow.pytorch.log_model(
            model, name="model", input_example=example, serialization_format="pt2"
        )
        version = mlflow.register_model(model_info.model_uri, name).version
        tags = {
            "gate": gate,
            "threat_model": config.train.norm,
            "eps": str(config.train.eps),
            "clean_accuracy": f"{evaluation['clean_accuracy']:.6f}",
            "robust_accuracy": f"{evaluation['robust_accuracy']:.6f}",
            "natural_clean_accuracy": f"{evaluation['natural']['clean_accuracy']:.6f}",
            "data_fingerprint": meta["fingerprint"],
            "dataset": meta["dataset"],
            "git_commit": commit,
            "trust_flags": str(len(evaluation["flags"])),
            "run_id": run.info.run_id,
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        alias, reason = choose_alias(
            client,
            name,
            verdict["passed"],
            config.train.norm,
            config.train.eps,
            evaluation["robust_accuracy"],
        )
        if alias is not None:
            client.set_registered_model_alias(name, alias, version)
        mlflow.set_tag("registered_version", f"{name}/{version}")
    registration = Registration(name, str(version), alias, run.info.run_id, gate, reason)
    write_json(layout.registration_file, asdict(registration))
    log.info(
        "registered %s version %s (gate %s) -> %s: %s",
        name,
        version,
        gate,
        alias or "no alias",
        reason,
    )
    return registration


register_task = task(run_register, name="register", cache_policy=NO_CACHE)
