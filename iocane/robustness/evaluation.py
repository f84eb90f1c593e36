"""The evaluate stage's figures: a hardened model beside its natural baseline.

Both models face the suite (the hardened one also the transfer attack from the natural one),
then the threat profile of ``evaluate.threats`` (``iocane.robustness.threat_profile``: none
without it), the certified band of ``evaluate.certify`` (``iocane.robustness.certification``:
none without it), the accuracy-vs-eps curves, C&W's minimal distances (presets above ``quick``), the
example mix for the grid of clean and attacked images, and the perceptual-alignment images.
``evaluate_models`` computes all of it; ``metrics_from`` gives the ``metrics/evaluate.json``
document. ``iocane evaluate`` on a model iocane did not train has no natural model: then only the
model itself is evaluated (under the name ``hardened``, as the files have always called the
model under evaluation), without the transfer attack, and ``natural`` is ``None``. Writing and
drawing are ``iocane.reports``' job (``iocane.reports.evaluation``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from attacks import PGD, registry
from attacks.cw import CarliniWagnerL2
from attacks.registry import curve_budget
from iocane.base.config import Config
from iocane.data.prepared import PreparedData
from iocane.robustness.alignment import Alignment, perceptual_alignment
from iocane.robustness.certification import certify_models
from iocane.robustness.checks import cw_curve_flags, half_accuracy_eps
from iocane.robustness.curves import MULTIPLIERS, accuracy_curve, curve_flags, eps_grids
from iocane.robustness.suite import (
    RobustnessResult,
    evaluate_robustness,
    evaluation_indices,
    suite_from_config,
)
from iocane.robustness.threat_profile import threat_profile
from iocane.training.hardware import subnormals_flushed

log = logging.getLogger("iocane")


@dataclass
class Examples:
    """The grid of clean and attacked images: the images, their labels, their adversarial
    versions, and the hardened model's predictions for both."""

    images: torch.Tensor
    labels: torch.Tensor
    adversarial: torch.Tensor
    clean_predictions: torch.Tensor
    adversarial_predictions: torch.Tensor


@dataclass
class ModelsEvaluation:
    """Everything the evaluate stage computed. ``evaluation`` holds the dataset, the preset, and
    per model (``hardened``, ``natural``) the ``RobustnessResult`` as a dict (plus, outside
    ``quick``, ``cw_distance_summary``'s keys, and for ``hardened`` the ``cw_flags``; ``natural``
    is ``None`` without a natural model); ``curves[norm]`` holds
    ``eps`` and each model's accuracies;
    ``reference_eps[norm]`` is the evaluation eps in that norm."""

    evaluation: dict
    curves: dict[str, dict[str, list[float]]]
    reference_eps: dict[str, float]
    examples: Examples
    alignment: Alignment


@subnormals_flushed()  # the suite, the curves and C&W alike: see iocane.training.hardware
def evaluate_models(
    config: Config, hardened: nn.Module, natural: nn.Module | None, data: PreparedData
) -> ModelsEvaluation:
    """Evaluate ``hardened`` beside ``natural`` (if any) on ``data``'s test split at
    ``config.train``'s threat model: the suite, the curves, the C&W distances, the examples and
    the alignment."""
    # The sample first, then its float images: not a float copy of the whole test split.
    keep = evaluation_indices(len(data.test), config.evaluate.n_samples, config.seed)
    images, labels = data.test.batch(keep), data.test.labels[keep]
    device = next(hardened.parameters()).device
    norm, eps = config.train.norm, config.train.eps
    models = {"hardened": hardened.eval()}
    if natural is not None:
        models["natural"] = natural.to(device).eval()
    evaluation: dict = {
        "dataset": data.meta["dataset"],
        "data_fingerprint": data.meta["fingerprint"],
        "preset": config.evaluate.preset,
    }
    results: dict[str, RobustnessResult] = {}
    for label, model in models.items():
        log.info("evaluating the %s model (%s, eps %g)", label, norm, eps)
        # Transfer from the natural model only makes sense against another model.
        surrogate = models.get("natural") if label == "hardened" else None
        result = evaluate_robustness(
            model,
            images,
            labels,
            norm=norm,
            eps=eps,
            attacks=suite_from_config(config, surrogate),
            preset=config.evaluate.preset,  # the budget of adaptive attacks the checks call for
            batch_size=config.evaluate.batch_size,
            seed=config.seed,
            device=device,
        )
        evaluation[label] = result.to_dict()
        results[label] = result
    if natural is None:
        evaluation["natural"] = None
    _add_threat_profile(evaluation, config, models, images, labels)
    _add_certified(evaluation, config, models, images, labels, results)

    samples, steps = curve_budget(config.evaluate.preset)
    subset_images, subset_labels = images[:samples].to(device), labels[:samples].to(device)
    grids = eps_grids(norm, eps, images[0].numel())
    curves = _curves(models, subset_images, subset_labels, grids, steps=steps, seed=config.seed)
    evaluation["hardened"]["flags"] += curve_flags(curves, data.meta["num_classes"])
    half_eps = half_accuracy_eps(curves["L2"]["eps"], curves["L2"]["hardened"])
    evaluation["hardened"]["l2_half_accuracy_eps"] = half_eps
    if config.evaluate.preset != "quick":
        _add_cw(evaluation, models, subset_images, subset_labels, half_eps=half_eps)
    examples = example_mix(models["hardened"], images, labels, norm=norm, eps=eps, seed=config.seed)
    # natural first, as the figure reads: what adversarial training changed
    alignment = perceptual_alignment(
        {label: models[label] for label in ("natural", "hardened") if label in models},
        images.to(device),
        labels.to(device),
        len(data.meta["class_names"]),
        norm,
        eps,
    )
    evaluation["alignment_targets_reached"] = alignment.reached
    return ModelsEvaluation(
        evaluation=evaluation,
        curves=curves,
        reference_eps={name: grid[MULTIPLIERS.index(1.0)] for name, grid in grids.items()},
        examples=examples,
        alignment=alignment,
    )


def _add_threat_profile(
    evaluation: dict,
    config: Config,
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
) -> None:
    """The profile of ``evaluate.threats`` (none without it: the evaluation stays as it was),
    each threat's trust flags also among the hardened model's, named by their threat."""
    if not config.evaluate.threats.profile():
        return
    suite_results = {label: evaluation[label] for label in models}
    threats = threat_profile(config, models, images, labels, suite_results)
    evaluation["threats"] = threats
    for name, figures in threats.items():
        evaluation["hardened"]["flags"] += [f"{name}: {flag}" for flag in figures["flags"]]


def _add_certified(
    evaluation: dict,
    config: Config,
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    results: dict[str, RobustnessResult],
) -> None:
    """The certified band of ``evaluate.certify`` on the points the suite attacked (none
    without it: the evaluation stays as it was); a certified point the suite broke raises a
    trust flag on the hardened model."""
    if config.evaluate.certify is None or not config.evaluate.certify.runs():
        return
    certification = certify_models(
        config,
        models,
        images,
        labels,
        {label: result.robust_per_sample for label, result in results.items()},
        results["hardened"].robust_accuracy,
    )
    evaluation["certified"] = certification.document
    evaluation["hardened"]["flags"] += certification.flags


def _curves(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    grids: dict[str, list[float]],
    *,
    steps: int,
    seed: int,
) -> dict[str, dict[str, list[float]]]:
    """Accuracy-vs-eps curves of every model, per norm: ``{norm: {"eps": grid, model: ...}}``."""
    curves = {}
    for curve_norm, grid in grids.items():
        log.info(
            "accuracy-vs-eps curve, %s, %d images, APGD-CE %d steps",
            curve_norm,
            len(labels),
            steps,
        )
        curves[curve_norm] = {"eps": grid}
        for label, model in models.items():
            curves[curve_norm][label] = accuracy_curve(
                model, images, labels, curve_norm, grid, steps, seed
            )
    return curves


def _add_cw(
    evaluation: dict,
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    half_eps: float | None,
) -> None:
    """C&W's distances into each model's figures, and the hardened model's ``cw_flags`` from
    comparing its median with ``half_eps``, where its L2 curve falls to half."""
    distances = cw_distances(models, images, labels, evaluation["preset"])
    for label, summary in distances.items():
        evaluation[label].update(summary)
    evaluation["hardened"]["cw_flags"] = cw_curve_flags(distances["hardened"], half_eps)
    if half_eps is None:
        log.info("  the L2 curve never falls to half its clean accuracy: C&W not checked on it")


def cw_distances(
    models: dict[str, nn.Module], images: torch.Tensor, labels: torch.Tensor, preset: str
) -> dict[str, dict]:
    """How far the nearest adversarial example lies, whatever the threat model, per model:
    ``cw_distance_summary`` of the C&W L2 minimal distances over its clean-correct images."""
    # The search of the suite's cw_l2 at the preset's budget (quick, which runs no C&W: standard's).
    budgets = registry.entry("cw_l2").budgets
    budget = budgets.get(preset, budgets["standard"])
    search_steps, cw_steps = int(budget["search_steps"]), int(budget["steps"])
    cw = CarliniWagnerL2(eps=0.0, steps=cw_steps, search_steps=search_steps)
    summaries = {}
    for label, model in models.items():
        with torch.no_grad():
            correct = model(images).argmax(1) == labels
        # A line before the search: on a large model it is the longest silent part of a run.
        log.info(
            "C&W L2 minimal distances (%s): %d images, %d searches of %d steps",
            label,
            int(correct.sum()),
            search_steps,
            cw_steps,
        )
        started = time.perf_counter()
        _, distance = cw.minimal(model, images[correct], labels[correct])
        summaries[label] = {
            **cw_distance_summary(distance, cw.max_const),
            "cw_seconds": round(time.perf_counter() - started, 1),  # where the time goes
        }
        log.info("  C&W L2 median minimal distance (%s): %s", label, cw_text(summaries[label]))
    return summaries


def cw_distance_summary(distance: torch.Tensor, max_const: float) -> dict:
    """The median minimal distance over all attacked points, the ones C&W did not fool counting
    as beyond every found one (``None`` when that puts the median among them: more than half
    not found), the share not found, and the ceiling on c that share is relative to."""
    found = torch.isfinite(distance)
    median = distance.median().item() if len(distance) else float("inf")
    return {
        "cw_median_l2": median if math.isfinite(median) else None,
        "cw_not_found_share": float((~found).float().mean()) if len(distance) else 0.0,
        "cw_points": len(distance),
        "cw_max_const": max_const,
    }


def cw_text(summary: dict, digits: int = 3) -> str:
    """The median as the reports state it: a number, or "not found", with the share not found
    and the ceiling on c where there is one."""
    share = summary.get("cw_not_found_share") or 0.0
    beyond = f"{share:.0%} of points not found with c <= {summary.get('cw_max_const', 0):g}"
    if summary.get("cw_median_l2") is None:
        return f"not found ({beyond})"
    return f"{summary['cw_median_l2']:.{digits}f}" + (f" ({beyond})" if share else "")


def example_mix(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str,
    eps: float,
    seed: int,
) -> Examples:
    """Eight test images for the grid: up to four the attack breaks, the rest it does not, with
    the model's predictions for the clean and the attacked images."""
    device = next(model.parameters()).device
    pool_images, pool_labels = images[:64].to(device), labels[:64].to(device)
    adversarial = PGD(eps=eps, norm=norm, steps=50, seed=seed)(model, pool_images, pool_labels)
    with torch.no_grad():
        broken = model(adversarial).argmax(1) != pool_labels
    chosen = torch.cat([broken.nonzero()[:4, 0], (~broken).nonzero()[:, 0]])[:8]
    images, labels, adversarial = pool_images[chosen], pool_labels[chosen], adversarial[chosen]
    with torch.no_grad():
        clean_predictions = model(images).argmax(1)
        adversarial_predictions = model(adversarial).argmax(1)
    return Examples(images, labels, adversarial, clean_predictions, adversarial_predictions)


def metrics_from(evaluation: dict) -> dict:
    """The ``metrics/evaluate.json`` document (without the cost figures) from
    ``ModelsEvaluation.evaluation``."""
    hardened, natural = evaluation["hardened"], evaluation["natural"]
    return {
        "clean_accuracy": hardened["clean_accuracy"],
        "robust_accuracy": hardened["robust_accuracy"],
        "attacks": hardened["per_attack"],
        "flags": hardened["flags"],
        "threat_model": hardened["norm"],
        "eps": hardened["eps"],
        "preset": evaluation["preset"],
        "n_samples": hardened["n_samples"],
        "seconds_per_attack": hardened["seconds_per_attack"],
        **_cw_figures(hardened),
        "cw_flags": hardened.get("cw_flags", []),
        "l2_half_accuracy_eps": hardened.get("l2_half_accuracy_eps"),
        "broken_only_by_reference": hardened["broken_only_by_reference"],
        "natural": None if natural is None else _baseline_figures(natural),
        "data_fingerprint": evaluation["data_fingerprint"],
        "dataset": evaluation["dataset"],
        "alignment_targets_reached": evaluation["alignment_targets_reached"],
        # The threat profile, where evaluate.threats asks for one (absent otherwise).
        **({"threats": evaluation["threats"]} if evaluation.get("threats") else {}),
        # The certified band, where evaluate.certify asks for one (absent otherwise).
        **({"certified": evaluation["certified"]} if evaluation.get("certified") else {}),
    }


def _baseline_figures(natural: dict) -> dict:
    return {
        "clean_accuracy": natural["clean_accuracy"],
        "robust_accuracy": natural["robust_accuracy"],
        "attacks": natural["per_attack"],
        **_cw_figures(natural),
    }


def _cw_figures(result: dict) -> dict:
    """``cw_median_l2`` (``None`` when more than half of the points were not found), the share
    not found, the ceiling on c and the search's seconds: all ``None`` in ``quick``, which runs
    no C&W."""
    keys = ("cw_median_l2", "cw_not_found_share", "cw_max_const", "cw_seconds")
    return {key: result.get(key) for key in keys}
