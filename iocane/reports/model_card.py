"""The model card: what a reviewer needs to decide about a registered version, on one page.

Logged as ``reports/model_card.md`` with the run and set as the registered version's
description, so the registry UI shows it next to the version (Mitchell et al. 2019, "Model
Cards for Model Reporting", adapted to adversarial robustness).
"""

from __future__ import annotations

from iocane.base.config import Config, OptimConfig
from iocane.reports.report import guarantee
from iocane.robustness.evaluation import cw_text

# MLflow stores a version's description in a 5,000-character column.
DESCRIPTION_LIMIT = 5000


def _capacity(width: int, depth: int) -> str:
    """0 means the architecture's default (models/)."""
    parts = [f"{label} {value}" for label, value in (("width", width), ("depth", depth)) if value]
    return ", ".join(parts) or "default width and depth"


def method_description(config: Config) -> str:
    """The training recipe in words, with the settings that matter for it."""
    train = config.train
    pgd = (
        f"{train.steps} steps of {train.step_size:g}, random start "
        f"{'on' if train.random_start else 'off'}"
    )
    descriptions = {
        "pgd": f"PGD (Madry et al. 2018), {pgd}, adversarial loss weight {train.adv_weight:g}",
        "trades": f"TRADES (Zhang et al. 2019), beta {train.trades_beta:g}, KL attack {pgd}",
        "fgsm": "FGSM (Goodfellow et al. 2015), one step of eps from the clean image, "
        f"adversarial loss weight {train.adv_weight:g}",
        "fgsm_rs": "FGSM with random start (Wong et al. 2020), one step of 1.25 eps, "
        f"adversarial loss weight {train.adv_weight:g}",
        "nfgsm": "N-FGSM (de Jorge et al. 2022), one step of eps from uniform noise of "
        f"2 eps, not projected back to eps, adversarial loss weight {train.adv_weight:g}",
        "free": f"free adversarial training (Shafahi et al. 2019), {train.free_replays} "
        "replays per minibatch",
        "alp": f"adversarial logit pairing (Kannan et al. 2018), pairing weight "
        f"{train.alp_weight:g}, PGD {pgd}, adversarial loss weight {train.adv_weight:g}",
        "multi": f"multi-threat PGD alternating {train.norm} eps {train.eps:g} with "
        f"{'L2' if train.norm == 'Linf' else 'Linf'} eps {train.multi_other_eps:g}, {pgd}",
    }
    return descriptions[train.method]


def optimizer_description(optim: OptimConfig) -> str:
    """The optimiser and its settings in words (``optimizer``, ``lr``, ``momentum``...)."""
    if optim.optimizer == "sgd":
        return (
            f"SGD lr {optim.lr:g}, momentum {optim.momentum:g}, weight decay {optim.weight_decay:g}"
        )
    name = {"adam": "Adam", "adamw": "AdamW"}[optim.optimizer]
    return f"{name} lr {optim.lr:g}, beta1 {optim.momentum:g}, weight decay {optim.weight_decay:g}"


def schedule_description(schedule: str) -> str:
    """A learning-rate schedule in words (``lr_schedule``)."""
    if schedule == "onecycle":
        return (
            "one-cycle schedule (Wong et al. 2020: the lr is the peak, reached linearly from 0 "
            "at 2/5 of training and back to 0 at its end, stepped every batch)"
        )
    return f"{schedule} schedule"


def checkpoint_lines(training: dict | None) -> list[str]:
    """Which epoch's weights this model is, and any collapse of training."""
    if not training or "selected_epoch" not in training:
        return []
    lines = [
        f"- Weights: epoch {training['selected_epoch']} of {training['last_epoch']} "
        f"(`{training['selection']}`; the best validation PGD accuracy was at epoch "
        f"{training['best_epoch']})."
    ]
    collapse = training.get("catastrophic_overfitting")
    if collapse:
        lines.append(
            f"- Catastrophic overfitting at epoch {collapse['epoch']}: validation PGD accuracy "
            f"fell to {collapse['val_adv_accuracy']:.3f} from "
            f"{collapse['best_val_adv_accuracy']:.3f}; training stopped on the weights of epoch "
            f"{collapse['restored_epoch']}."
        )
    return lines


def _row(label: str, hardened: float | None, natural: float | None) -> str:
    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return f"| {label} | {cell(hardened)} | {cell(natural)} |"


def render_model_card(
    config: Config,
    evaluation: dict,
    verdict: dict,
    meta: dict,
    provenance: dict[str, str],
    title: str,
    training: dict | None = None,
    costs: dict | None = None,
) -> str:
    """The card as markdown. ``evaluation`` is ``metrics/evaluate.json``, ``verdict``
    ``metrics/gate.json``, ``meta`` the prepared data's ``meta.json``, ``training``
    ``metrics/train.json``; ``provenance`` maps labels (git commit, DVC data version, ...) to
    values; ``costs`` is ``iocane.reports.costs.cost_summary``."""
    norm, eps = evaluation["threat_model"], evaluation["eps"]
    lines = [
        f"# Model card: {title}",
        "",
        f"**Gate: {'passed' if verdict['passed'] else 'FAILED'}.** "
        f"Clean accuracy {evaluation['clean_accuracy']:.4f}, worst-case robust accuracy "
        f"{evaluation['robust_accuracy']:.4f} against {norm} perturbations up to eps = {eps:g}.",
        "",
        *_use_and_threat_lines(evaluation, meta),
        "",
        *_recipe_lines(config, training),
        *([f"- Hardened from {provenance['base_model']}."] if "base_model" in provenance else []),
        "",
        *_results_lines(evaluation),
        "",
        *_trust_and_gate_lines(evaluation, verdict),
    ]
    if costs is not None:
        lines += ["", "## Cost", "", *cost_lines(costs)]
    lines += ["", *_limits_lines(norm, eps), "", "## Provenance", ""]
    lines += [f"- {label}: `{value}`" for label, value in provenance.items()]
    return "\n".join(lines) + "\n"


def render_evaluation_card(
    evaluation: dict, meta: dict, provenance: dict[str, str], title: str, source: str
) -> str:
    """The card of a model iocane did not train (``iocane evaluate`` on any model): no gate,
    no training recipe; the model as given (``source``), its figures beside the baseline's when
    there is one. ``evaluation`` is the evaluation's ``metrics/evaluate.json``."""
    norm, eps = evaluation["threat_model"], evaluation["eps"]
    baseline = provenance.get("baseline")
    lines = [
        f"# Model card: {title}",
        "",
        f"**Evaluated as given (not trained or gated by iocane).** Clean accuracy "
        f"{evaluation['clean_accuracy']:.4f}, worst-case robust accuracy "
        f"{evaluation['robust_accuracy']:.4f} against {norm} perturbations up to eps = {eps:g}.",
        "",
        *_use_and_threat_lines(evaluation, meta),
        "",
        "## Model",
        "",
        f"- `{source}`, evaluated as it is: it takes images in [0, 1].",
        *([f"- Baseline: `{baseline}`."] if baseline else ["- No baseline model was given."]),
        "",
        *_results_lines(evaluation, ("model", "baseline"), subject="evaluated"),
        "",
        *_trust_lines(evaluation),
        "",
        *_limits_lines(norm, eps),
        "",
        "## Provenance",
        "",
    ]
    lines += [f"- {label}: `{value}`" for label, value in provenance.items()]
    return "\n".join(lines) + "\n"


def _use_and_threat_lines(evaluation: dict, meta: dict) -> list[str]:
    """The card's intended use and threat model."""
    norm, eps = evaluation["threat_model"], evaluation["eps"]
    return [
        "## Intended use",
        "",
        f"Classifying `{meta['dataset']}` images ({meta.get('image_size', '?')}x"
        f"{meta.get('image_size', '?')}, {meta['num_classes']} classes, pixels in [0, 1]) where "
        f"an attacker may add a {norm} perturbation of size up to {eps:g} to the input. Not for "
        "other input distributions, other image sizes or other threat models without a new "
        "evaluation.",
        "",
        f"Classes, by label: {', '.join(meta.get('class_names', [])) or 'unknown'}.",
        "",
        "## Threat model",
        "",
        f"- Perturbation: {norm} norm, eps = {eps:g} in [0, 1] pixel units; adversarial images "
        "stay in [0, 1].",
        "- Attacker: white-box (knows the architecture and the weights and uses gradients), and "
        "score-based black-box and transfer attacks beside it.",
        f"- Evaluation: the `{evaluation['preset']}` suite on {evaluation['n_samples']} test "
        "images; a sample counts as robust only if no attack fools it (per-sample worst case).",
    ]


def _limits_lines(norm: str, eps: float) -> list[str]:
    return [
        "## Known limits",
        "",
        f"- Not robust beyond eps = {eps:g}: accuracy falls as the perturbation grows (see the "
        "accuracy-vs-eps curves).",
        f"- Not evaluated against other threat models than {norm} (other norms, rotations, "
        "translations, colour shifts, patches) unless the curves say so.",
        "- Physical-world perturbations (printed, photographed, sensor noise) are untested.",
        "- The robust accuracy is empirical: a stronger, unknown attack may find more.",
    ]


def _recipe_lines(config: Config, training: dict | None) -> list[str]:
    """The card's training recipe: the model, the natural warmup, adversarial training."""
    train, warmup, model = config.train, config.warmup, config.model
    budget_epochs = (training or {}).get("budget_epochs")
    if budget_epochs is not None:  # the plan trained: a budget's plan follows the machine
        partial = training.get("last_epoch_steps") is not None
        budget_epochs = max(1, training.get("epochs", budget_epochs) - partial)
    ramp = (
        train.eps_ramp_epochs
        if budget_epochs is None
        else min(train.eps_ramp_epochs, budget_epochs)
    )
    return [
        "## Training recipe",
        "",
        f"- Model: `{model.name}` ({_capacity(model.width, model.depth)}), input "
        "normalisation inside the model.",
        f"- Natural warmup: {warmup.epochs} epochs, {optimizer_description(warmup)}, "
        f"{schedule_description(warmup.lr_schedule)}.",
        f"- Adversarial training, {method_description(config)}: {_train_epochs(config, training)}, "
        f"{train.norm} eps {train.eps:g}, eps ramped over {ramp} epochs; "
        f"{optimizer_description(train)}, {schedule_description(train.lr_schedule)}; "
        f"seed {config.seed}.",
        *checkpoint_lines(training),
    ]


def _train_epochs(config: Config, training: dict | None) -> str:
    """The adversarial epochs: ``train.epochs``, or those a time budget decided."""
    if not training or training.get("budget_epochs") is None:
        return f"{config.train.epochs} epochs"
    epochs = training["budget_epochs"]
    decided = (
        f"{epochs} epoch{'s' if epochs != 1 else ''}, the number that filled a training budget of "
        f"{training['budget_minutes']:g} minutes (one epoch calibrated at "
        f"{training['calibrated_epoch_seconds']:.1f} s on the machine that trained it)"
    )
    stopped = training.get("budget_stopped_after_epoch")
    trained, partial = training.get("epochs", epochs), training.get("last_epoch_steps")
    if stopped is None and (trained != epochs or partial is not None):
        last = f", the last of them {partial} steps long" if partial is not None else ""
        return (
            f"{decided}; {trained} trained{last}, as the plan followed the machine's pace "
            "(the lr schedule rebuilt over it)"
        )
    if stopped is None:
        return decided
    return (
        f"{decided}; stopped after epoch {stopped}, when the machine ran slower than calibrated "
        "and no more epochs fitted the budget (the lr schedule shortened to the epochs that did)"
    )


def _results_lines(
    evaluation: dict,
    columns: tuple[str, str] = ("hardened", "natural baseline"),
    subject: str = "hardened",
) -> list[str]:
    """The card's results: hardened beside natural (``n/a`` without one), per attack, and the
    guarantee."""
    natural = evaluation["natural"] or {"clean_accuracy": None, "robust_accuracy": None}
    natural.setdefault("attacks", {})
    lines = [
        "## Results",
        "",
        f"| metric | {columns[0]} | {columns[1]} |",
        "|---|---|---|",
        _row("clean accuracy", evaluation["clean_accuracy"], natural["clean_accuracy"]),
        _row(
            "robust accuracy (worst case)",
            evaluation["robust_accuracy"],
            natural["robust_accuracy"],
        ),
    ]
    lines += [
        _row(f"robust accuracy: {name}", value, natural["attacks"].get(name))
        for name, value in evaluation["attacks"].items()
    ]
    if _has_cw(evaluation):
        baseline = cw_text(natural, digits=4) if _has_cw(natural) else "n/a"
        lines.append(
            "| median L2 distance to an adversarial example (C&W) | "
            f"{cw_text(evaluation, digits=4)} | {baseline} |"
        )
    norm, eps = evaluation["threat_model"], evaluation["eps"]
    return [
        *lines,
        "",
        guarantee(evaluation["robust_accuracy"], norm, eps, list(evaluation["attacks"]), subject),
    ]


def _has_cw(figures: dict) -> bool:
    """Whether C&W ran: a finite median, or (since C&W reports the points it did not find) a
    share not found."""
    return any(figures.get(key) is not None for key in ("cw_median_l2", "cw_not_found_share"))


def _trust_lines(evaluation: dict) -> list[str]:
    lines = ["## Evaluation trust", ""]
    cw_flags = [f"- {flag} (does not fail the gate)" for flag in evaluation.get("cw_flags", [])]
    if evaluation["flags"] or cw_flags:
        lines += [f"- {flag}" for flag in evaluation["flags"]] + cw_flags
    else:
        lines.append("No trust check fired (see the robustness report for the list of checks).")
    return lines


def _trust_and_gate_lines(evaluation: dict, verdict: dict) -> list[str]:
    """The card's trust flags and the gate's checks."""
    lines = [*_trust_lines(evaluation), "", "## Gate", ""]
    lines += [
        f"- {check['name']} = {check['value']:.4f}, required {check['rule']} "
        f"{check['threshold']:.4f}: {'met' if check['passed'] else 'NOT met'}"
        for check in verdict["checks"]
    ]
    return lines


def cost_lines(costs: dict) -> list[str]:
    """What the run cost, as the card's bullet points."""
    lines = [
        f"- Wall time: {costs['hours'] * 60:.1f} minutes (warmup "
        f"{costs['warmup_hours'] * 60:.1f}, adversarial training {costs['train_hours'] * 60:.1f}, "
        f"evaluation {costs['evaluate_hours'] * 60:.1f})."
    ]
    if costs.get("overhead_time_ratio") is not None:
        lines.append(
            f"- Adversarial training took {costs['overhead_time_ratio']:.1f}x the time of natural "
            f"training per training image"
            + (
                f", and {costs['overhead_pass_ratio']:.1f}x the passes through the model."
                if costs.get("overhead_pass_ratio") is not None
                else "."
            )
        )
    passes = [
        f"{stage} {costs[f'{stage}_forward_passes']:,} forward / "
        f"{costs[f'{stage}_backward_passes']:,} backward"
        for stage in ("warmup", "train", "evaluate")
        if costs.get(f"{stage}_forward_passes") is not None
    ]
    if passes:
        lines.append(f"- Passes through the model: {'; '.join(passes)}.")
    if costs.get("price") is not None:
        lines.append(f"- Estimated price: {costs['price']:.2f} (report.price_per_hour).")
    if costs.get("robust_gain_per_hour") is not None:
        lines.append(
            f"- Robust accuracy gained over the natural model: {costs['robust_gain']:+.4f}, "
            f"{costs['robust_gain_per_hour']:+.3f} per hour spent."
        )
    return lines


def as_description(card: str, link: str) -> str:
    """The card as a version description, cut to MLflow's limit with a pointer to the whole."""
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    tail = f"\n\n... (cut; the whole card: {link})\n"
    return card[: DESCRIPTION_LIMIT - len(tail)] + tail
