"""The model card: what a reviewer needs to decide about a registered version, on one page.

Logged as ``reports/model_card.md`` with the run and set as the registered version's
description, so the registry UI shows it next to the version (Mitchell et al. 2019, "Model
Cards for Model Reporting", adapted to adversarial robustness).

The text is in ``templates/model_card.md.j2`` (a run's card), ``templates/evaluation_card.md.j2``
(a model iocane did not train) and the parts under ``templates/card/`` they share; this module
computes what they read: the numbers formatted, the sentence variants chosen by the data.
"""

from __future__ import annotations

from iocane.base.config import Config, OptimConfig
from iocane.reports.certified import certified_context
from iocane.reports.report import measured_statement
from iocane.reports.templating import render
from iocane.reports.threats import profile_context
from iocane.robustness.evaluation import cw_text
from iocane.training.recipes import recipe_class

# MLflow stores a version's description in a 5,000-character column.
DESCRIPTION_LIMIT = 5000


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
    return render(
        "model_card.md.j2",
        title=title,
        gate_passed=verdict["passed"],
        **_headline_context(evaluation),
        **_use_and_threat_context(evaluation, meta),
        **recipe_context(config, training),
        base_model=provenance.get("base_model"),
        **results_context(evaluation),
        **profile_context(evaluation.get("threats")),
        profile_columns=("natural baseline", "hardened"),
        profile_figure=None,
        **band_context(evaluation, "hardened"),
        **_trust_context(evaluation),
        checks=[_check_context(check) for check in verdict["checks"]],
        costs=None if costs is None else cost_context(costs),
        provenance=list(provenance.items()),
    )


def render_evaluation_card(
    evaluation: dict, meta: dict, provenance: dict[str, str], title: str, source: str
) -> str:
    """The card of a model iocane did not train (``iocane evaluate`` on any model): no gate,
    no training recipe; the model as given (``source``), its figures beside the baseline's when
    there is one. ``evaluation`` is the evaluation's ``metrics/evaluate.json``."""
    return render(
        "evaluation_card.md.j2",
        title=title,
        **_headline_context(evaluation),
        **_use_and_threat_context(evaluation, meta),
        source=source,
        baseline=provenance.get("baseline"),
        **results_context(evaluation, ("model", "baseline"), subject="evaluated"),
        **profile_context(evaluation.get("threats")),
        profile_columns=("baseline", "model"),
        profile_figure=None,
        **band_context(evaluation, "evaluated"),
        **_trust_context(evaluation),
        provenance=list(provenance.items()),
    )


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


def _capacity(width: int, depth: int) -> str:
    """0 means the architecture's default (models/)."""
    parts = [f"{label} {value}" for label, value in (("width", width), ("depth", depth)) if value]
    return ", ".join(parts) or "default width and depth"


def _headline_context(evaluation: dict) -> dict:
    """The threat model and the two figures of the card's first paragraph and its limits."""
    return {
        "clean_accuracy": f"{evaluation['clean_accuracy']:.4f}",
        "robust_accuracy": f"{evaluation['robust_accuracy']:.4f}",
        "norm": evaluation["threat_model"],
        "eps": f"{evaluation['eps']:g}",
    }


def _use_and_threat_context(evaluation: dict, meta: dict) -> dict:
    """The card's intended use and threat model (``templates/card/use_and_threat.md.j2``)."""
    return {
        "dataset": meta["dataset"],
        "image_size": meta.get("image_size", "?"),
        "num_classes": meta["num_classes"],
        "class_names": meta.get("class_names", []),
        "preset": evaluation["preset"],
        "n_samples": evaluation["n_samples"],
    }


def recipe_context(config: Config, training: dict | None) -> dict:
    """The card's training recipe (``templates/card/recipe.md.j2``): the model, the natural
    warmup, adversarial training and which epoch's weights this model is."""
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
    return {
        "model_name": model.name,
        "capacity": _capacity(model.width, model.depth),
        "warmup": {
            "epochs": warmup.epochs,
            "optimizer": optimizer_description(warmup),
            "schedule": schedule_description(warmup.lr_schedule),
        },
        "train": {
            "method": recipe_class(train.method).card_text(train),
            "plan": _epochs_plan(config, training),
            "norm": train.norm,
            "eps": f"{train.eps:g}",
            "ramp_epochs": ramp,
            "optimizer": optimizer_description(train),
            "schedule": schedule_description(train.lr_schedule),
        },
        "seed": config.seed,
        "checkpoint": _checkpoint_context(training),
    }


def _recipe_lines(config: Config, training: dict | None) -> list[str]:
    """The card's training recipe section, line by line."""
    return render("card/recipe.md.j2", **recipe_context(config, training)).splitlines()


def _epochs_plan(config: Config, training: dict | None) -> dict:
    """How many adversarial epochs, and why: ``train.epochs`` (``budget`` false), or those a
    time budget decided, with what became of the plan (``outcome``: ``decided`` as planned,
    ``grown`` as it followed the machine's pace, ``stopped`` when the machine ran slow)."""
    if not training or training.get("budget_epochs") is None:
        return {"budget": False, "epochs": config.train.epochs}
    epochs = training["budget_epochs"]
    stopped = training.get("budget_stopped_after_epoch")
    trained, partial = training.get("epochs", epochs), training.get("last_epoch_steps")
    if stopped is not None:
        outcome = "stopped"
    elif trained != epochs or partial is not None:
        outcome = "grown"
    else:
        outcome = "decided"
    return {
        "budget": True,
        "epochs": epochs,
        "minutes": f"{training['budget_minutes']:g}",
        "calibrated_seconds": f"{training['calibrated_epoch_seconds']:.1f}",
        "outcome": outcome,
        "trained": trained,
        "last_epoch_steps": partial,
        "stopped_after": stopped,
    }


def _checkpoint_context(training: dict | None) -> dict | None:
    """Which epoch's weights this model is, and any collapse of training (``None`` for a
    ``metrics/train.json`` that does not say)."""
    if not training or "selected_epoch" not in training:
        return None
    collapse = training.get("catastrophic_overfitting")
    return {
        "selected_epoch": training["selected_epoch"],
        "last_epoch": training["last_epoch"],
        "selection": training["selection"],
        "best_epoch": training["best_epoch"],
        "collapse": _collapse_context(collapse) if collapse else None,
    }


def _collapse_context(collapse: dict) -> dict:
    """Catastrophic overfitting: the epoch it was seen, the fall, the weights kept."""
    return {
        "epoch": collapse["epoch"],
        "val_adv_accuracy": f"{collapse['val_adv_accuracy']:.3f}",
        "best_val_adv_accuracy": f"{collapse['best_val_adv_accuracy']:.3f}",
        "restored_epoch": collapse["restored_epoch"],
    }


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def results_context(
    evaluation: dict,
    columns: tuple[str, str] = ("hardened", "natural baseline"),
    subject: str = "hardened",
) -> dict:
    """The card's results (``templates/card/results.md.j2``): the model beside its natural
    baseline (``n/a`` without one), per attack, C&W's distance, and what the attacked figure
    supports (measured, not proven)."""
    natural = evaluation["natural"] or {"clean_accuracy": None, "robust_accuracy": None}
    natural_attacks = natural.get("attacks", {})

    def pair(model: float | None, baseline: float | None) -> dict:
        return {"model": _cell(model), "baseline": _cell(baseline)}

    cw_row = None
    if _has_cw(evaluation):
        baseline = cw_text(natural, digits=4) if _has_cw(natural) else "n/a"
        cw_row = {"model": cw_text(evaluation, digits=4), "baseline": baseline}
    return {
        "columns": columns,
        "clean": pair(evaluation["clean_accuracy"], natural["clean_accuracy"]),
        "robust": pair(evaluation["robust_accuracy"], natural["robust_accuracy"]),
        "attack_rows": [
            {"attack": name, **pair(value, natural_attacks.get(name))}
            for name, value in evaluation["attacks"].items()
        ],
        "cw_row": cw_row,
        "measured": measured_statement(
            evaluation["robust_accuracy"],
            evaluation["threat_model"],
            evaluation["eps"],
            list(evaluation["attacks"]),
            subject,
        ),
    }


def band_context(evaluation: dict, subject: str) -> dict:
    """What is proven beside what was measured (``templates/certified.md.j2``; no section
    without a certification), the evaluated model called ``subject`` in its sentences."""
    natural = evaluation["natural"]
    natural_attacked = None if natural is None else natural["robust_accuracy"]
    return {**certified_context(evaluation.get("certified"), natural_attacked), "subject": subject}


def _has_cw(figures: dict) -> bool:
    """Whether C&W ran: a finite median, or (since C&W reports the points it did not find) a
    share not found."""
    return any(figures.get(key) is not None for key in ("cw_median_l2", "cw_not_found_share"))


def _trust_context(evaluation: dict) -> dict:
    """The trust flags (``templates/card/trust.md.j2``); C&W's do not fail the gate."""
    return {"flags": evaluation["flags"], "cw_flags": evaluation.get("cw_flags", [])}


def _check_context(check: dict) -> dict:
    """One of the gate's checks, its figures as the card writes them."""
    return {
        "name": check["name"],
        "value": f"{check['value']:.4f}",
        "rule": check["rule"],
        "threshold": f"{check['threshold']:.4f}",
        "passed": check["passed"],
    }


def cost_context(costs: dict) -> dict:
    """What the run cost (``templates/card/cost.md.j2``), from ``cost_summary``: minutes,
    ratios, passes through the model, price and robust gain, each ``None`` (or no passes)
    where the summary has none."""

    def optional(key: str, spec: str) -> str | None:
        return None if costs.get(key) is None else format(costs[key], spec)

    return {
        "minutes": f"{costs['hours'] * 60:.1f}",
        "warmup_minutes": f"{costs['warmup_hours'] * 60:.1f}",
        "train_minutes": f"{costs['train_hours'] * 60:.1f}",
        "evaluate_minutes": f"{costs['evaluate_hours'] * 60:.1f}",
        "time_ratio": optional("overhead_time_ratio", ".1f"),
        "pass_ratio": optional("overhead_pass_ratio", ".1f"),
        "passes": [
            {
                "name": stage,
                "forward": f"{costs[f'{stage}_forward_passes']:,}",
                "backward": f"{costs[f'{stage}_backward_passes']:,}",
            }
            for stage in ("warmup", "train", "evaluate")
            if costs.get(f"{stage}_forward_passes") is not None
        ],
        "price": optional("price", ".2f"),
        # The gain is stated only beside its rate, as one sentence.
        "gain": None
        if costs.get("robust_gain_per_hour") is None
        else f"{costs['robust_gain']:+.4f}",
        "gain_per_hour": optional("robust_gain_per_hour", "+.3f"),
    }


def as_description(card: str, link: str) -> str:
    """The card as a version description, cut to MLflow's limit with a pointer to the whole."""
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    tail = f"\n\n... (cut; the whole card: {link})\n"
    return card[: DESCRIPTION_LIMIT - len(tail)] + tail
