"""The model card: every section a reviewer needs, and a description that fits MLflow."""

from __future__ import annotations

from iocane.base.config import load_config
from iocane.reports.model_card import (
    DESCRIPTION_LIMIT,
    as_description,
    render_evaluation_card,
    render_model_card,
)
from iocane.robustness.gate import check_gate
from tests.helpers.paths import PROJECT_ROOT

META = {"dataset": "digits", "image_size": 8, "num_classes": 10}


def _evaluation(flags: list[str]) -> dict:
    return {
        "clean_accuracy": 0.97,
        "robust_accuracy": 0.81,
        "attacks": {"pgd": 0.83, "apgd_t": 0.81, "transfer": 0.9},
        "flags": flags,
        "threat_model": "L2",
        "eps": 0.5,
        "preset": "standard",
        "n_samples": 360,
        "cw_median_l2": 0.9,
        "natural": {
            "clean_accuracy": 0.99,
            "robust_accuracy": 0.2,
            "attacks": {"pgd": 0.25, "apgd_t": 0.2},
            "cw_median_l2": 0.4,
        },
    }


def test_card_covers_use_threat_recipe_results_gate_limits_and_provenance() -> None:
    config = load_config(PROJECT_ROOT / "params.yaml", ["train.norm=L2", "train.eps=0.5"])
    evaluation = _evaluation(flags=["zero input gradients for 60% of samples"])
    verdict = check_gate(config.gate, evaluation)
    meta = {"dataset": "digits", "image_size": 8, "num_classes": 10}
    card = render_model_card(
        config, evaluation, verdict, meta, {"git_commit": "abc123"}, title="m v3"
    )
    assert card.startswith("# Model card: m v3\n\n**Gate: FAILED.**")
    for section in (
        "Intended use",
        "Threat model",
        "Training recipe",
        "Results",
        "Evaluation trust",
        "Gate",
        "Known limits",
        "Provenance",
    ):
        assert f"\n## {section}\n" in card, section
    assert "L2 norm, eps = 0.5" in card and "white-box" in card
    assert "| robust accuracy (worst case) | 0.8100 | 0.2000 |" in card
    assert "| robust accuracy: transfer | 0.9000 | n/a |" in card
    assert "at least **81.0%**" in card
    assert "- zero input gradients for 60% of samples" in card
    assert "trust_flags = 1.0000, required <= 0.0000: NOT met" in card
    assert "Physical-world perturbations" in card and "`abc123`" in card
    assert "default width and depth" in card


def test_card_says_what_the_run_cost() -> None:
    config = load_config(PROJECT_ROOT / "params.yaml")
    evaluation = _evaluation(flags=[])
    costs = {
        "warmup_hours": 0.01,
        "train_hours": 0.1,
        "evaluate_hours": 0.04,
        "hours": 0.15,
        "overhead_time_ratio": 11.0,
        "overhead_pass_ratio": 4.5,
        "warmup_forward_passes": 100,
        "warmup_backward_passes": 100,
        "train_forward_passes": 1200,
        "train_backward_passes": 1100,
        "evaluate_forward_passes": 5000,
        "evaluate_backward_passes": 4000,
        "price": 0.3,
        "robust_gain": 0.61,
        "robust_gain_per_hour": 4.0667,
    }
    card = render_model_card(
        config,
        evaluation,
        check_gate(config.gate, evaluation),
        {"dataset": "digits", "image_size": 8, "num_classes": 10},
        {},
        title="m v1",
        costs=costs,
    )
    assert "\n## Cost\n" in card
    assert (
        "- Wall time: 9.0 minutes (warmup 0.6, adversarial training 6.0, evaluation 2.4)." in card
    )
    assert "11.0x the time of natural training per training image, and 4.5x the passes" in card
    assert "train 1,200 forward / 1,100 backward" in card
    assert "- Estimated price: 0.30" in card
    assert "+0.6100, +4.067 per hour spent" in card


def test_description_is_cut_to_mlflows_limit_with_a_link() -> None:
    assert as_description("short card", "runs:/r/reports/model_card.md") == "short card"
    cut = as_description("x" * 9000, "runs:/r/reports/model_card.md")
    assert len(cut) <= DESCRIPTION_LIMIT and cut.endswith("runs:/r/reports/model_card.md)\n")


def test_card_of_a_model_hardened_from_a_model_uri_names_what_it_resolved_to() -> None:
    from iocane.model_files import describe_lineage

    base = {"uri": "models:/mine@prod", "name": "mine", "version": "3", "run_id": "r1"}
    assert describe_lineage(base) == "models:/mine@prod (mine version 3, run r1)"
    run = {"uri": "runs:/r2/model", "run_id": "r2", "artifact_path": "model"}
    assert describe_lineage(run) == "runs:/r2/model (run r2)"
    assert describe_lineage({"path": "w.pt", "sha256": "ab"}) == "w.pt (sha256 ab)"
    config = load_config(PROJECT_ROOT / "params.yaml")
    evaluation = _evaluation(flags=[])
    meta = {"dataset": "digits", "image_size": 8, "num_classes": 10}
    provenance = {"base_model": describe_lineage(base)}
    card = render_model_card(
        config, evaluation, check_gate(config.gate, evaluation), meta, provenance, title="m v4"
    )
    assert "- Hardened from models:/mine@prod (mine version 3, run r1)." in card


def test_card_of_a_model_evaluated_as_given_has_no_gate_and_no_recipe() -> None:
    evaluation = {**_evaluation(flags=[]), "natural": None}
    meta = {"dataset": "digits", "image_size": 8, "num_classes": 10}
    card = render_evaluation_card(
        evaluation, meta, {"model": "mine.pt2 (sha256 ab)"}, title="mine", source="mine.pt2"
    )
    assert card.startswith("# Model card: mine\n\n**Evaluated as given")
    assert "\n## Gate\n" not in card and "\n## Training recipe\n" not in card
    assert "| metric | model | baseline |" in card and "| clean accuracy | 0.9700 | n/a |" in card
    assert "No baseline model was given." in card and "the evaluated model keeps" in card


def test_card_describes_nfgsm_and_the_one_cycle_schedule() -> None:
    config = load_config(
        PROJECT_ROOT / "params.yaml",
        ["train.method=nfgsm", "train.lr_schedule=onecycle", "train.lr=0.2"],
    )
    evaluation = _evaluation(flags=[])
    card = render_model_card(
        config,
        evaluation,
        check_gate(config.gate, evaluation),
        {"dataset": "digits", "image_size": 8, "num_classes": 10},
        {},
        title="m v1",
    )
    assert "N-FGSM (de Jorge et al. 2022), one step of eps from uniform noise of 2 eps" in card
    assert "SGD lr 0.2" in card and "one-cycle schedule (Wong et al. 2020" in card
    assert "onecycle schedule" not in card
    assert "constant schedule." in card, "the warmup's schedule reads as before"


def test_card_states_cw_not_found_and_its_flag_without_failing_the_gate() -> None:
    config = load_config(PROJECT_ROOT / "params.yaml", ["train.norm=L2", "train.eps=0.5"])
    evaluation = _evaluation(flags=[])
    evaluation.update(cw_median_l2=None, cw_not_found_share=0.6, cw_max_const=1e6)
    evaluation["natural"].update(cw_not_found_share=0.0, cw_max_const=1e6)
    evaluation["cw_flags"] = ["C&W L2 median minimal distance not found ... exceeds L2 eps 1.400"]
    verdict = check_gate(config.gate, evaluation)
    card = render_model_card(config, evaluation, verdict, META, {}, title="m")
    row = (
        "| median L2 distance to an adversarial example (C&W) | not found (60% of points not "
        "found with c <= 1e+06) | 0.4000 |"
    )
    assert row in card
    assert "exceeds L2 eps 1.400 (does not fail the gate)" in card
    assert verdict["passed"] and "trust_flags = 0.0000, required <= 0.0000: met" in card
    for token in ("inf", "Infinity", "nan"):
        assert f" {token}" not in card


def test_card_of_an_older_evaluation_keeps_its_cw_row() -> None:
    config = load_config(PROJECT_ROOT / "params.yaml", ["train.norm=L2", "train.eps=0.5"])
    evaluation = _evaluation(flags=[])  # no share nor ceiling: written before C&W widened
    card = render_model_card(config, evaluation, check_gate(config.gate, evaluation), META, {}, "m")
    assert "| median L2 distance to an adversarial example (C&W) | 0.9000 | 0.4000 |" in card
