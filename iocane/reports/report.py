"""The robustness report (``reports/robustness.md``): what a person reads about an evaluation.

The threat model, clean and worst-case robust accuracy of the hardened and the natural model with
each attack's own figure, the empirical guarantee they support (``guarantee``, which the model
card states too), the trust flags, and the figures (``iocane.reports.figures``) linked beside it.
"""

from __future__ import annotations

from iocane.robustness.alignment import LARGE_EPS_FACTOR
from iocane.robustness.evaluation import cw_text


def _model_row(label: str, result: dict, attacks: list[str]) -> str:
    """A model's row of the report's table, one cell per attack of the header: ``n/a`` for an
    attack this model did not face (transfer from the natural model runs against the hardened
    one only), as the model card writes it."""
    cells = " | ".join(
        "n/a" if result["per_attack"].get(name) is None else f"{result['per_attack'][name]:.4f}"
        for name in attacks
    )
    return (
        f"| {label} | {result['clean_accuracy']:.4f} | {result['robust_accuracy']:.4f} | {cells} |"
    )


# What the report and the figures call the two models of a run. ``iocane evaluate`` on a model
# iocane did not train names them otherwise (``evaluation["labels"]``).
RUN_LABELS = {"hardened": "hardened", "natural": "natural (warmup)"}


def guarantee(
    robust_accuracy: float, norm: str, eps: float, attacks: list[str], subject: str = "hardened"
) -> str:
    """The empirical statement a robust accuracy supports, and no more."""
    return (
        f"Empirically, the {subject} model keeps an accuracy of at least "
        f"**{robust_accuracy:.1%}** against every attack in this suite for any {norm} "
        f"perturbation up to eps = {eps:g} (per-sample worst case over {', '.join(attacks)}). "
        "This is an upper bound on true robustness, not a certificate."
    )


def render_report(evaluation: dict) -> str:
    """The markdown robustness report (also the Prefect artifact ``robustness-report``). Without
    a natural model (``evaluation["natural"]`` is ``None``) the table has the model's row only."""
    hardened, natural = evaluation["hardened"], evaluation["natural"]
    labels = {**RUN_LABELS, **evaluation.get("labels", {})}
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
    for label, result in ((labels["hardened"], hardened), (labels["natural"], natural)):
        if result is not None:
            lines.append(_model_row(label, result, list(hardened["per_attack"])))
    lines += [
        "",
        guarantee(
            hardened["robust_accuracy"],
            norm,
            eps,
            list(hardened["per_attack"]),
            subject=labels["hardened"],
        ),
        "",
        "## Evaluation trust",
        "",
    ]
    if hardened["flags"] or hardened.get("cw_flags"):
        lines += [f"- {flag}" for flag in hardened["flags"]]
        lines += [
            f"- {flag} (this one does not fail the gate)" for flag in hardened.get("cw_flags", [])
        ]
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
    lines += _cw_lines(hardened, natural)
    lines += [
        "",
        "## Accuracy against perturbation size",
        "",
        "![accuracy vs eps](../plots/robustness_curves.png)",
        "",
        f"## Clean and attacked examples ({labels['hardened']} model; red: misclassified)",
        "",
        "![examples](../plots/adversarial_examples.png)",
        "",
        "## Perceptual alignment (natural beside hardened model)"
        if natural is not None
        else f"## Perceptual alignment ({labels['hardened']} model)",
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


def _cw_lines(hardened: dict, natural: dict | None) -> list[str]:
    """The C&W distance sentence (presets above ``quick``): the medians, "not found" where more
    than half the points were, and the L2 curve's half-accuracy eps it was checked against."""
    if "cw_median_l2" not in hardened:
        return []
    baseline = f", natural {cw_text(natural)}" if natural is not None else ""
    half_eps = hardened.get("l2_half_accuracy_eps")
    check = (
        f" The hardened model's L2 curve falls to half its clean accuracy at eps {half_eps:.3f}."
        if half_eps is not None
        else " The hardened model's L2 curve never falls to half its clean accuracy: no check "
        "of the C&W median against it."
    )
    return [
        "",
        "Median L2 distance to the nearest adversarial example found by C&W L2 "
        f"(clean-correct images of the curve subset): hardened {cw_text(hardened)}{baseline}."
        + check,
    ]
