"""The validation suite: robust accuracy as the per-sample worst case over several attacks.

``evaluate_robustness`` works on any ``nn.Module`` mapping [0,1] images to logits. A sample
counts as robust only if it is classified correctly clean *and* under every attack in the suite
(the per-sample worst case, as AutoAttack reports it); ``per_attack`` gives each attack's own
robust accuracy, measured on every clean-correct sample, so the figures can be compared with
each other. ``flags`` lists the evaluation-trust warnings (gradient masking and broken-attack
smells, after Carlini et al. 2019 and AutoAttack's checks: see ``iocane.robustness.checks``); it
is empty when every check passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from attacks import Attack, registry, threat_model
from attacks.suites import AttackHookError, adaptive_attack, build_suite
from iocane.base.config import Config, ConfigError
from iocane.base.settings import resolve_device
from iocane.robustness.checks import (
    adaptive_attacks_for,
    bound_violation,
    broken_only_by_reference,
    comparison_flags,
    cross_check_flags,
    model_checks,
    without_adaptive,
)
from iocane.training.hardware import subnormals_flushed

log = logging.getLogger("iocane")


@dataclass
class RobustnessResult:
    clean_accuracy: float
    robust_accuracy: float  # per-sample worst case over every attack run
    per_attack: dict[str, float]  # each attack's own robust accuracy
    flags: list[str]
    seconds_per_attack: dict[str, float]
    norm: str
    eps: float
    n_samples: int
    seconds: float
    robust_per_sample: list[bool] = field(repr=False, default_factory=list)
    # Cross-check: points an independent reference (AutoAttack) broke that iocane's attacks missed
    broken_only_by_reference: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        payload = asdict(self)
        payload.pop("robust_per_sample")
        return payload


@torch.no_grad()
def _predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    )


def _attack_in_batches(
    attack: Attack, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> torch.Tensor:
    return torch.cat(
        [
            attack(model, images[i : i + batch_size], labels[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        ]
    )


def _add_adaptive_attacks(
    suite: dict[str, Attack],
    checks: Mapping[str, str],
    *,
    preset: str,
    norm: str,
    eps: float,
    seed: int,
) -> list[str]:
    """Add to ``suite`` the adaptive attacks the model checks call for, at the preset's budget;
    the names of those that have no version for ``norm`` (and so did not join)."""
    skipped = []
    for name in adaptive_attacks_for(checks):
        if norm not in registry.entry(name).norms:
            # EOT-PGD and BPDA-PGD step in Lp balls; under a sparse threat the score-based
            # search (sparse_rs, patch_rs) already reads no gradient at all.
            log.info("  the model checks call for %s, which has no %s version", name, norm)
            skipped.append(name)
            continue
        if name not in suite:
            log.info("  the model checks call for %s: it joins the suite", name)
            suite[name] = adaptive_attack(name, preset, norm, eps, seed)
    return skipped


@dataclass
class _Cascade:
    """What each attack of a suite left standing, and the worst case over all of them."""

    robust: torch.Tensor  # per sample: clean-correct and no attack so far fooled it
    survivors: dict[str, torch.Tensor] = field(default_factory=dict)
    per_attack: dict[str, float] = field(default_factory=dict)
    seconds_per_attack: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # examples outside the threat model


def _run_suite(
    suite: Mapping[str, Attack],
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    clean_correct: torch.Tensor,
    *,
    norm: str,
    eps: float,
    batch_size: int,
) -> _Cascade:
    """Every attack on every clean-correct sample (the others count as broken already)."""
    cascade = _Cascade(robust=clean_correct.clone())
    targets = clean_correct.nonzero().squeeze(1)
    for name, attack in suite.items():
        attack_started = time.perf_counter()
        survives = torch.zeros_like(clean_correct)
        if len(targets):
            adversarial = _attack_in_batches(
                attack, model, images[targets], labels[targets], batch_size
            )
            violation = bound_violation(name, adversarial, images[targets], norm, eps)
            if violation:
                cascade.flags.append(violation)
            survives[targets] = _predict(model, adversarial, batch_size) == labels[targets]
        cascade.survivors[name] = survives
        cascade.per_attack[name] = survives.float().mean().item()
        cascade.seconds_per_attack[name] = time.perf_counter() - attack_started
        cascade.robust &= survives
        log.info(
            "  %-12s robust accuracy %.4f  (worst case so far %.4f, %.1fs)",
            name,
            cascade.per_attack[name],
            cascade.robust.float().mean().item(),
            time.perf_counter() - attack_started,
        )
    return cascade


@subnormals_flushed()  # a robust model's saturated logits: see iocane.training.hardware
def evaluate_robustness(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str = "Linf",
    eps: float,
    attacks: Mapping[str, Attack] | None = None,
    preset: str = "standard",
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str | None = None,
    adaptive: bool = True,
) -> RobustnessResult:
    """Clean accuracy, per-attack and worst-case robust accuracy, and trust flags.

    ``images`` are (N, C, H, W) in [0, 1], ``labels`` (N,). ``attacks`` maps names to
    attacks of the ``attacks`` package call shape; by default the suite ``preset``
    (``quick``, ``standard`` or ``thorough``, see ``attacks.registry``). With ``adaptive``, the
    adaptive attacks the model checks call for join the suite at the preset's budget: EOT-PGD
    for a randomised forward pass, BPDA for zero or non-finite input gradients.

    Every attack runs on every clean-correct sample, not only on the survivors of the
    attacks before it: the trust checks compare the attacks' own accuracies, and for a robust
    model the survivors are most of the points anyway. Within an attack, samples already
    fooled are dropped (early stopping).
    The model is put in eval mode; its parameters are not changed.
    """
    started = time.perf_counter()
    threat_model(norm)  # an unknown norm fails here, before any work
    device = torch.device(device) if device is not None else resolve_device()
    # Channels-last, the layout CPU (oneDNN) and GPU (cuDNN) convolutions prefer, as training
    # uses it (iocane.training.hardware): on the Fashion-MNIST default's compact_cnn the suite
    # ran 1.3x faster, with the same figures. The weights change layout, not values.
    model = model.to(device, memory_format=torch.channels_last).eval()
    images, labels = images.to(device), labels.to(device)
    suite = dict(attacks) if attacks is not None else build_suite(preset, norm, eps, seed)

    clean_correct = _predict(model, images, batch_size) == labels
    checks = model_checks(model, images[:batch_size], labels[:batch_size])
    skipped = (
        _add_adaptive_attacks(suite, checks, preset=preset, norm=norm, eps=eps, seed=seed)
        if adaptive
        else []
    )
    cascade = _run_suite(
        suite, model, images, labels, clean_correct, norm=norm, eps=eps, batch_size=batch_size
    )
    n_clean_correct = int(clean_correct.sum())
    flags = [without_adaptive(flag, skipped, norm) for flag in checks.values()] + cascade.flags
    flags += comparison_flags(cascade.per_attack, n_clean_correct, norm=norm)
    missed_by_reference = broken_only_by_reference(cascade.survivors, clean_correct)
    flags += cross_check_flags(missed_by_reference, n_clean_correct)
    robust = cascade.robust
    return RobustnessResult(
        clean_accuracy=clean_correct.float().mean().item(),
        robust_accuracy=robust.float().mean().item(),
        per_attack=cascade.per_attack,
        flags=flags,
        seconds_per_attack=cascade.seconds_per_attack,
        norm=norm,
        eps=eps,
        n_samples=len(labels),
        seconds=time.perf_counter() - started,
        robust_per_sample=robust.cpu().tolist(),
        broken_only_by_reference=missed_by_reference,
    )


def evaluation_indices(count: int, n_samples: int, seed: int) -> torch.Tensor | slice:
    """Which of ``count`` images the evaluation takes: ``n_samples`` of them drawn with
    ``seed`` (all of them for 0 or more than there are), the same for the same seed."""
    if n_samples == 0 or n_samples >= count:
        return slice(None)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n_samples]


def evaluation_subset(
    images: torch.Tensor, labels: torch.Tensor, n_samples: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels at ``evaluation_indices``."""
    keep = evaluation_indices(len(labels), n_samples, seed)
    return images[keep], labels[keep]


_evaluation_subset = evaluation_subset  # the name benchmarks/capacity.py imports


def suite_from_config(config: Config, surrogate: nn.Module | None = None) -> dict[str, Attack]:
    """The suite ``config.evaluate`` names at ``config.train``'s threat model; a user's attack
    that cannot be built is a config error that names ``evaluate.extra_attacks``."""
    evaluate = config.evaluate
    try:
        return build_suite(
            evaluate.preset,
            config.train.norm,
            config.train.eps,
            config.seed,
            surrogate,
            extra=evaluate.extra_attacks,
        )
    except AttackHookError as error:
        raise ConfigError(f"evaluate.extra_attacks: {error}") from None
