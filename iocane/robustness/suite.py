"""The validation suite: robust accuracy as the per-sample worst case over several attacks.

``evaluate_robustness`` works on any ``nn.Module`` mapping [0,1] images to logits. A sample
counts as robust only if it is classified correctly clean *and* under every attack in the suite
(the per-sample worst case, as AutoAttack reports it); ``per_attack`` gives each attack's own
robust accuracy, measured on every clean-correct sample, so the figures can be compared with
each other. ``flags`` lists the evaluation-trust warnings (gradient masking and broken-attack
smells, after Carlini et al. 2019 and AutoAttack's checks); it is empty when every check passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from attacks import PGD, Attack, threat_model
from attacks.cw import CarliniWagnerL2
from attacks.suites import (
    BLACK_BOX,
    BUDGET_ORDER,
    CURVE_BUDGETS,
    REFERENCES,
    AttackHookError,
    adaptive_attack,
    build_suite,
)
from iocane.config import Config, ConfigError
from iocane.data.prepared import PreparedData
from iocane.files import write_json, write_text
from iocane.layout import Layout
from iocane.robustness.alignment import LARGE_EPS_FACTOR, plot_alignment
from iocane.robustness.curves import (
    MULTIPLIERS,
    accuracy_curve,
    curve_flags,
    eps_grids,
    plot_curves,
    plot_examples,
)
from iocane.settings import resolve_device
from iocane.training.passes import counting_passes

log = logging.getLogger("iocane")

_BOUND_TOLERANCE = 1e-5  # float32 rounding at the ball's surface and at 0 and 1


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


def _bound_violation(
    name: str, adversarial: torch.Tensor, images: torch.Tensor, norm: str, eps: float
) -> str | None:
    if not torch.isfinite(adversarial).all():
        return f"{name}: adversarial examples contain NaN or inf"
    if adversarial.min() < -_BOUND_TOLERANCE or adversarial.max() > 1 + _BOUND_TOLERANCE:
        return f"{name}: adversarial examples leave the [0, 1] image range"
    distance = threat_model(norm).norm(adversarial - images).max().item()
    if distance > eps * (1 + 1e-4) + _BOUND_TOLERANCE:
        return f"{name}: adversarial examples leave the {norm} ball (distance {distance:.4g} > eps)"
    return None


def model_checks(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, str]:
    """Checks on the model itself, by name: ``randomised`` forward pass, ``probabilities``
    instead of logits, ``non_finite_gradients``, ``no_gradients`` (zero or missing input
    gradients). The value is the trust flag to report."""
    checks = {}
    with torch.no_grad():
        first, second = model(images), model(images)
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
        checks["randomised"] = (
            "randomised forward pass: two passes on the same input differ; expectation over "
            "transformation (eot_pgd) joins the suite, and the predictions themselves are random"
        )
    rows_sum_to_one = torch.allclose(first.sum(1), torch.ones(len(first)), atol=1e-3)
    if first.min() >= 0 and first.max() <= 1 and rows_sum_to_one:
        checks["probabilities"] = (
            "outputs look like probabilities, not logits: cross-entropy on them saturates and "
            "weakens gradient attacks"
        )
    with torch.enable_grad():
        inputs = images.clone().requires_grad_(True)
        loss = F.cross_entropy(model(inputs), labels, reduction="sum")
        grad = None
        if loss.requires_grad:  # else a step outside autograd cut the input off
            (grad,) = torch.autograd.grad(loss, inputs, allow_unused=True)
    if grad is not None and not torch.isfinite(grad).all():
        checks["non_finite_gradients"] = (
            "non-finite input gradients: gradient attacks cannot be trusted; BPDA (bpda_pgd) "
            "joins the suite"
        )
    else:
        zero_share = 1.0 if grad is None else (grad.flatten(1).abs().amax(1) == 0).float().mean()
        if zero_share > 0.5:
            checks["no_gradients"] = (
                f"zero input gradients for {float(zero_share):.0%} of samples: a sign of gradient "
                "masking (shattered or obfuscated gradients); BPDA (bpda_pgd) joins the suite"
            )
    return checks


def adaptive_attacks_for(checks: Mapping[str, str]) -> list[str]:
    """The adaptive attacks the model checks call for (see ``attacks.adaptive``)."""
    wanted = []
    if "randomised" in checks:
        wanted.append("eot_pgd")
    if "no_gradients" in checks or "non_finite_gradients" in checks:
        wanted.append("bpda_pgd")
    return wanted


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
    (``quick``, ``standard`` or ``thorough``, see ``attacks.suites``). With ``adaptive``, the
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
    model = model.to(device).eval()
    images, labels = images.to(device), labels.to(device)
    suite = dict(attacks) if attacks is not None else build_suite(preset, norm, eps, seed)

    clean_correct = _predict(model, images, batch_size) == labels
    robust = clean_correct.clone()
    per_attack: dict[str, float] = {}
    seconds_per_attack: dict[str, float] = {}
    checks = model_checks(model, images[:batch_size], labels[:batch_size])
    flags = list(checks.values())
    if adaptive:
        for name in adaptive_attacks_for(checks):
            if name not in suite:
                log.info("  the model checks call for %s: it joins the suite", name)
                suite[name] = adaptive_attack(name, preset, norm, eps, seed)
    targets = clean_correct.nonzero().squeeze(1)
    survivors: dict[str, torch.Tensor] = {}
    for name, attack in suite.items():
        attack_started = time.perf_counter()
        survives = torch.zeros_like(clean_correct)
        if len(targets):
            adversarial = _attack_in_batches(
                attack, model, images[targets], labels[targets], batch_size
            )
            violation = _bound_violation(name, adversarial, images[targets], norm, eps)
            if violation:
                flags.append(violation)
            survives[targets] = _predict(model, adversarial, batch_size) == labels[targets]
        survivors[name] = survives
        per_attack[name] = survives.float().mean().item()
        seconds_per_attack[name] = time.perf_counter() - attack_started
        robust &= survives
        log.info(
            "  %-12s robust accuracy %.4f  (worst case so far %.4f, %.1fs)",
            name,
            per_attack[name],
            robust.float().mean().item(),
            time.perf_counter() - attack_started,
        )
    n_clean_correct = int(clean_correct.sum())
    flags += comparison_flags(per_attack, n_clean_correct)
    missed_by_reference = broken_only_by_reference(survivors, clean_correct)
    flags += cross_check_flags(missed_by_reference, n_clean_correct)
    return RobustnessResult(
        clean_accuracy=clean_correct.float().mean().item(),
        robust_accuracy=robust.float().mean().item(),
        per_attack=per_attack,
        flags=flags,
        seconds_per_attack=seconds_per_attack,
        norm=norm,
        eps=eps,
        n_samples=len(labels),
        seconds=time.perf_counter() - started,
        robust_per_sample=robust.cpu().tolist(),
        broken_only_by_reference=missed_by_reference,
    )


def _tolerance(n_clean_correct: int) -> float:
    """How much two attacks' robust accuracies may differ by chance: 1%, or three samples where
    that is more (random starts on a small evaluation set)."""
    return max(0.01, 3 / max(n_clean_correct, 1))


def comparison_flags(per_attack: Mapping[str, float], n_clean_correct: int = 1000) -> list[str]:
    """Carlini et al. 2019: iterative attacks must beat single-step ones, more steps and
    restarts must not raise robust accuracy, and black-box attacks must not beat white-box
    ones; otherwise gradients are probably masked."""
    flags = []
    if "fgsm" in per_attack:
        for name, accuracy in per_attack.items():
            iterative = name != "fgsm" and name not in BLACK_BOX | REFERENCES
            if iterative and accuracy > per_attack["fgsm"] + 1e-9:
                flags.append(
                    f"iterative attack {name} ({accuracy:.4f}) is weaker than single-step FGSM "
                    f"({per_attack['fgsm']:.4f}): a sign of gradient masking"
                )
    tolerance = _tolerance(n_clean_correct)
    for weaker, stronger in BUDGET_ORDER:
        if weaker not in per_attack or stronger not in per_attack:
            continue
        if per_attack[stronger] > per_attack[weaker] + tolerance:
            flags.append(
                f"{stronger} ({per_attack[stronger]:.4f}) is weaker than {weaker} "
                f"({per_attack[weaker]:.4f}): more steps, restarts or a better optimiser "
                "raised robust accuracy, a sign of gradient masking or a broken attack"
            )
    white_box = [value for name, value in per_attack.items() if name not in BLACK_BOX | REFERENCES]
    for name in BLACK_BOX & set(per_attack):
        if white_box and per_attack[name] < min(white_box) - 1e-9:
            flags.append(
                f"black-box attack {name} ({per_attack[name]:.4f}) beats every white-box attack "
                f"(best {min(white_box):.4f}): gradients are probably masked"
            )
    return flags


def broken_only_by_reference(
    survivors: Mapping[str, torch.Tensor], clean_correct: torch.Tensor
) -> dict[str, int]:
    """For each independent reference implementation run (AutoAttack's own code): how many
    points it broke that every one of iocane's own attacks left standing."""
    own_survivors = clean_correct.clone()
    for name, survives in survivors.items():
        if name not in REFERENCES:
            own_survivors &= survives
    return {
        name: int((own_survivors & ~survivors[name]).sum())
        for name in sorted(REFERENCES & set(survivors))
    }


def cross_check_flags(missed_by_reference: Mapping[str, int], n_clean_correct: int) -> list[str]:
    """A reference that breaks more than 0.5% of the points iocane's attacks all missed means
    iocane's own suite would have overstated robustness. Those points count in the worst case
    either way; a point or two is the noise of random restarts."""
    return [
        f"the independent reference {name} broke {missed} of {n_clean_correct} clean-correct "
        "points that every iocane attack missed: iocane's own attacks are weaker than the "
        "reference on this model (those points count in the worst case)"
        for name, missed in missed_by_reference.items()
        if missed > 0.005 * n_clean_correct
    ]


def _evaluation_subset(
    images: torch.Tensor, labels: torch.Tensor, n_samples: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if n_samples == 0 or n_samples >= len(labels):
        return images, labels
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n_samples]
    return images[keep], labels[keep]


def suite_from_config(config: Config, surrogate: nn.Module | None = None) -> dict[str, Attack]:
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


def guarantee(robust_accuracy: float, norm: str, eps: float, attacks: list[str]) -> str:
    """The empirical statement a robust accuracy supports, and no more."""
    return (
        f"Empirically, the hardened model keeps an accuracy of at least "
        f"**{robust_accuracy:.1%}** against every attack in this suite for any {norm} "
        f"perturbation up to eps = {eps:g} (per-sample worst case over {', '.join(attacks)}). "
        "This is an upper bound on true robustness, not a certificate."
    )


def render_report(evaluation: dict) -> str:
    """The markdown robustness report (also the Prefect artifact ``robustness-report``)."""
    hardened, natural = evaluation["hardened"], evaluation["natural"]
    norm, eps = hardened["norm"], hardened["eps"]
    lines = [
        "# Robustness report",
        "",
        f"Threat model: **{norm}** perturbations up to **eps = {eps:g}** in [0, 1] pixel units; "
        "white-box attacker (knows the architecture and the weights).",
        f"Evaluated on {hardened['n_samples']} test images of `{evaluation['dataset']}` with "
        f"the `{evaluation['preset']}` attack suite.",
        "",
        "| model | clean accuracy | worst-case robust accuracy | "
        + " | ".join(hardened["per_attack"])
        + " |",
        "|---|---|---|" + "---|" * len(hardened["per_attack"]),
    ]
    for label, result in (("hardened", hardened), ("natural (warmup)", natural)):
        cells = " | ".join(f"{value:.4f}" for value in result["per_attack"].values())
        lines.append(
            f"| {label} | {result['clean_accuracy']:.4f} | {result['robust_accuracy']:.4f} | "
            f"{cells} |"
        )
    lines += [
        "",
        guarantee(hardened["robust_accuracy"], norm, eps, list(hardened["per_attack"])),
        "",
        "## Evaluation trust",
        "",
    ]
    if hardened["flags"]:
        lines += [f"- {flag}" for flag in hardened["flags"]]
    else:
        lines.append(
            "No trust check fired: gradients finite and non-zero, deterministic logits, "
            "iterative attacks at least as strong as FGSM, more steps and restarts never "
            "weaker, no black-box attack stronger than the white-box ones, examples inside the "
            "ball, accuracy falling with eps to chance."
        )
    for reference, missed in hardened.get("broken_only_by_reference", {}).items():
        lines += [
            "",
            f"Cross-check: `{reference}`, AutoAttack's reference implementation (`pyautoattack`, "
            f"version standard), ran on the same points and broke {missed} point(s) that every "
            "iocane attack missed; they count in the worst case above.",
        ]
    if "cw_median_l2" in hardened:
        lines += [
            "",
            "Median L2 distance to the nearest adversarial example found by C&W L2 "
            f"(clean-correct images of the curve subset): hardened {hardened['cw_median_l2']:.3f}, "
            f"natural {natural['cw_median_l2']:.3f}.",
        ]
    lines += [
        "",
        "## Accuracy against perturbation size",
        "",
        "![accuracy vs eps](../plots/robustness_curves.png)",
        "",
        "## Clean and attacked examples (hardened model; red: misclassified)",
        "",
        "![examples](../plots/adversarial_examples.png)",
        "",
        "## Perceptual alignment (natural beside hardened model)",
        "",
        "Input gradients, and targeted PGD towards the next class at "
        f"{LARGE_EPS_FACTOR:g}x the threat model's eps. Targets reached: "
        + ", ".join(
            f"{name} {share:.0%}"
            for name, share in evaluation.get("alignment_targets_reached", {}).items()
        )
        + ". A robust model's gradients follow the object, and its targeted images start to "
        "look like the target class (Tsipras et al. 2019).",
        "",
        "![perceptual alignment](../plots/perceptual_alignment.png)",
    ]
    return "\n".join(lines) + "\n"


def _example_mix(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    eps: float,
    config: Config,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eight test images for the grid: up to four the attack breaks, the rest it does not."""
    device = next(model.parameters()).device
    pool_images, pool_labels = images[:64].to(device), labels[:64].to(device)
    adversarial = PGD(eps=eps, norm=norm, steps=50, seed=config.seed)(
        model, pool_images, pool_labels
    )
    with torch.no_grad():
        broken = model(adversarial).argmax(1) != pool_labels
    chosen = torch.cat([broken.nonzero()[:4, 0], (~broken).nonzero()[:, 0]])[:8]
    return pool_images[chosen], pool_labels[chosen], adversarial[chosen]


def evaluate_and_report(
    config: Config, hardened: nn.Module, natural: nn.Module, data: PreparedData, out: Layout
) -> dict:
    """Evaluate a hardened model beside its natural baseline on ``data``'s test split, at
    ``config.train``'s threat model, and write metrics, report, curves and examples under
    ``out``. Used by the evaluate stage and by ``iocane evaluate`` on a registered version.
    The metrics include what the evaluation cost: its wall time and the passes through both
    models."""
    started = time.perf_counter()
    with (
        counting_passes(hardened, "hardened") as by_hardened,
        counting_passes(natural, "natural") as by_natural,
    ):
        metrics, evaluation = _evaluate(config, hardened, natural, data, out)
    metrics["seconds"] = time.perf_counter() - started
    for count in (by_hardened, by_natural):  # the totals add up, the sections are apart
        for key, value in count.totals().items():
            metrics[key] = metrics.get(key, 0) + int(value)
    write_json(out.metrics_file("evaluate"), metrics)
    write_text(out.report_file, render_report(evaluation))
    return metrics


def _evaluate(
    config: Config, hardened: nn.Module, natural: nn.Module, data: PreparedData, out: Layout
) -> tuple[dict, dict]:
    """The figures of ``evaluate_and_report`` (the metrics and the whole evaluation), with the
    curves and the examples written."""
    images, labels = _evaluation_subset(
        data.test.images, data.test.labels, config.evaluate.n_samples, config.seed
    )
    device = next(hardened.parameters()).device
    norm, eps = config.train.norm, config.train.eps
    models = {"hardened": hardened.eval(), "natural": natural.to(device).eval()}
    evaluation: dict = {
        "dataset": data.meta["dataset"],
        "data_fingerprint": data.meta["fingerprint"],
        "preset": config.evaluate.preset,
    }
    for label, model in models.items():
        log.info("evaluating the %s model (%s, eps %g)", label, norm, eps)
        # Transfer from the natural model only makes sense against another model.
        surrogate = models["natural"] if label == "hardened" else None
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

    samples, steps = CURVE_BUDGETS[config.evaluate.preset]
    subset_images, subset_labels = images[:samples].to(device), labels[:samples].to(device)
    grids = eps_grids(norm, eps, images[0].numel())
    curves = {}
    for curve_norm, grid in grids.items():
        log.info(
            "accuracy-vs-eps curve, %s, %d images, APGD-CE %d steps",
            curve_norm,
            len(subset_labels),
            steps,
        )
        curves[curve_norm] = {"eps": grid}
        for label, model in models.items():
            curves[curve_norm][label] = accuracy_curve(
                model, subset_images, subset_labels, curve_norm, grid, steps, config.seed
            )
    evaluation["hardened"]["flags"] += curve_flags(curves, data.meta["num_classes"])
    if config.evaluate.preset != "quick":
        # How far the nearest adversarial example lies, whatever the threat model: C&W L2.
        search_steps, cw_steps = (9, 200) if config.evaluate.preset == "thorough" else (5, 100)
        cw = CarliniWagnerL2(eps=0.0, steps=cw_steps, search_steps=search_steps)
        for label, model in models.items():
            with torch.no_grad():
                correct = model(subset_images).argmax(1) == subset_labels
            _, distance = cw.minimal(model, subset_images[correct], subset_labels[correct])
            evaluation[label]["cw_median_l2"] = distance.median().item()
            log.info("  C&W L2 median minimal distance (%s): %.4f", label, distance.median())
    write_json(out.curves_file, curves)
    plot_curves(
        curves,
        {name: grid[MULTIPLIERS.index(1.0)] for name, grid in grids.items()},
        out.curves_plot,
    )
    plot_examples(
        models["hardened"],
        *_example_mix(models["hardened"], images, labels, norm, eps, config),
        data.meta["class_names"],
        out.examples_plot,
    )
    # natural first, as the figure reads: what adversarial training changed
    evaluation["alignment_targets_reached"] = plot_alignment(
        {"natural": models["natural"], "hardened": models["hardened"]},
        images.to(device),
        labels.to(device),
        data.meta["class_names"],
        norm,
        eps,
        out.alignment_plot,
    )

    hardened = evaluation["hardened"]
    metrics = {
        "clean_accuracy": hardened["clean_accuracy"],
        "robust_accuracy": hardened["robust_accuracy"],
        "attacks": hardened["per_attack"],
        "flags": hardened["flags"],
        "threat_model": norm,
        "eps": eps,
        "preset": config.evaluate.preset,
        "n_samples": hardened["n_samples"],
        "seconds_per_attack": hardened["seconds_per_attack"],
        "cw_median_l2": hardened.get("cw_median_l2"),
        "broken_only_by_reference": hardened["broken_only_by_reference"],
        "natural": {
            "clean_accuracy": evaluation["natural"]["clean_accuracy"],
            "robust_accuracy": evaluation["natural"]["robust_accuracy"],
            "attacks": evaluation["natural"]["per_attack"],
            "cw_median_l2": evaluation["natural"].get("cw_median_l2"),
        },
        "data_fingerprint": evaluation["data_fingerprint"],
        "dataset": evaluation["dataset"],
        "alignment_targets_reached": evaluation["alignment_targets_reached"],
    }
    return metrics, evaluation
