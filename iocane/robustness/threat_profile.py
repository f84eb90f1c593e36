"""The threat profile: what a model withstands beyond the threat it was trained for.

``evaluate.threats`` names threats and their budgets (``attacks.threats``); for each, every model
(the hardened one, and the natural one when there is one) faces the threat's members on every
clean-correct test point, as the suite runs its attacks. A member's accuracy counts the points
classified correctly both clean and after it, over all points, as the suite's ``per_attack`` does.

- The norm-based threats (linf, l2, l0, patch) run through ``evaluate_robustness`` with the
  threat's members as its attacks, so the suite's bound and comparison checks hold them too; the
  training threat (``train.norm`` at ``train.eps``) is not attacked twice: its entry is the main
  suite's result.
- Spatial: the per-sample worst case over its members, as for the norms.
- Corruptions: each corruption's accuracy is its mean over the severities, and the threat's the
  mean over corruptions and severities (Hendrycks & Dietterich 2019 report the mean, not a worst
  case: a corruption is a shift the model meets, not an adversary's choice).

``threat_profile`` returns the ``threats`` document of ``metrics/evaluate.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from attacks.registry import LP_NORMS
from attacks.threats import ThreatEntry, threat_entry
from iocane.base.config import Config
from iocane.robustness.checks import BOUND_TOLERANCE
from iocane.robustness.suite import evaluate_robustness

log = logging.getLogger("iocane")


def threat_profile(
    config: Config,
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    suite_results: Mapping[str, dict],
) -> dict[str, dict]:
    """Every threat of ``config.evaluate.threats`` against ``models`` (``hardened``, and
    ``natural`` if present) on ``images``: ``{threat: figures}`` as ``metrics/evaluate.json``
    holds them. ``suite_results`` are the main suite's ``RobustnessResult.to_dict()`` per model,
    which the training threat's entry reuses."""
    profile = {}
    for name, budget in config.evaluate.threats.profile().items():
        entry = threat_entry(name)
        started = time.perf_counter()
        if _is_training_threat(entry, budget, config):
            log.info("threat %s (%s): the training threat, the suite's figures", name, budget)
            results = {label: _from_suite(suite_results[label]) for label in models}
        else:
            log.info("threat %s (%s)", name, entry.budget_text(budget))
            results = {
                label: _run_threat(entry, budget, config, model, images, labels)
                for label, model in models.items()
            }
        profile[name] = _figures(entry, budget, results, time.perf_counter() - started)
    return profile


def _is_training_threat(entry: ThreatEntry, budget: Any, config: Config) -> bool:
    return entry.norm == config.train.norm and float(budget) == float(config.train.eps)


def _from_suite(result: dict) -> dict:
    return {
        "accuracy": result["robust_accuracy"],
        "members": dict(result["per_attack"]),
        "flags": [],  # already the evaluation's own flags: not counted twice
        "from_suite": True,
    }


def _figures(entry: ThreatEntry, budget: Any, results: dict[str, dict], seconds: float) -> dict:
    natural = results.get("natural")
    hardened = results["hardened"]
    figures = {
        "budget": budget,
        "budget_text": entry.budget_text(budget),
        "measure": entry.measure,
        "hardened": hardened["accuracy"],
        "natural": None if natural is None else natural["accuracy"],
        "members": {
            "hardened": hardened["members"],
            "natural": None if natural is None else natural["members"],
        },
        "seconds": round(seconds, 2),
        "flags": hardened["flags"],
    }
    if hardened.get("from_suite"):
        figures["from_suite"] = True  # the training threat: the main suite's figures
    return figures


def _run_threat(
    entry: ThreatEntry,
    budget: Any,
    config: Config,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> dict:
    """One model under one threat: its accuracy, each member's, and the trust flags."""
    evaluate = config.evaluate
    members = entry.members(budget, evaluate.preset, config.seed)
    if entry.norm is not None:
        result = evaluate_robustness(
            model,
            images,
            labels,
            norm=entry.norm,
            eps=budget,
            attacks=members,
            preset=evaluate.preset,
            batch_size=evaluate.batch_size,
            seed=config.seed,
            device=next(model.parameters()).device,
            # The adaptive attacks are Lp PGD variants: no use against a sparse threat.
            adaptive=entry.norm in LP_NORMS,
        )
        return {
            "accuracy": result.robust_accuracy,
            "members": result.per_attack,
            "flags": result.flags,
        }
    return _run_members(entry, members, model, images, labels, evaluate.batch_size)


@torch.no_grad()
def _predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    )


def _run_members(
    entry: ThreatEntry,
    members: Mapping[str, Any],
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
) -> dict:
    """A threat that is no norm ball: every member on every clean-correct point; the per-sample
    worst case over the members, or (corruptions) the mean of their accuracies."""
    device = next(model.parameters()).device
    model.eval()
    images, labels = images.to(device), labels.to(device)
    clean_correct = _predict(model, images, batch_size) == labels
    targets = clean_correct.nonzero().squeeze(1)
    robust = clean_correct.clone()
    accuracies: dict[str, float] = {}
    flags = []
    for name, member in members.items():
        survives = torch.zeros_like(clean_correct)
        if len(targets):
            changed = torch.cat(
                [
                    member(
                        model,
                        images[targets[i : i + batch_size]],
                        labels[targets[i : i + batch_size]],
                    )
                    for i in range(0, len(targets), batch_size)
                ]
            )
            flag = _image_flag(name, changed, images[targets])
            if flag:
                flags.append(flag)
            survives[targets] = _predict(model, changed, batch_size) == labels[targets]
        accuracies[name] = survives.float().mean().item()
        robust &= survives
        log.info("  %-24s accuracy %.4f", name, accuracies[name])
    if entry.measure == "mean":
        per_corruption = _mean_over_severities(accuracies)
        accuracy = sum(accuracies.values()) / len(accuracies)
        return {"accuracy": accuracy, "members": per_corruption, "flags": flags}
    return {"accuracy": robust.float().mean().item(), "members": accuracies, "flags": flags}


def _mean_over_severities(accuracies: Mapping[str, float]) -> dict[str, float]:
    """``{"fog_s1": a, "fog_s3": b}`` -> ``{"fog": mean(a, b)}``, in the members' order."""
    grouped: dict[str, list[float]] = {}
    for member, accuracy in accuracies.items():
        grouped.setdefault(member.rpartition("_s")[0] or member, []).append(accuracy)
    return {name: sum(values) / len(values) for name, values in grouped.items()}


def _image_flag(name: str, changed: torch.Tensor, images: torch.Tensor) -> str | None:
    """A member whose images cannot be fed to the model as the data is: another shape, not
    finite, or outside [0, 1]."""
    if changed.shape != images.shape:
        return f"{name}: returned images of shape {tuple(changed.shape)}, not {tuple(images.shape)}"
    if not torch.isfinite(changed).all():
        return f"{name}: images contain NaN or inf"
    if changed.min() < -BOUND_TOLERANCE or changed.max() > 1 + BOUND_TOLERANCE:
        return f"{name}: images leave the [0, 1] range"
    return None
