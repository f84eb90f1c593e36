"""The inputs of the report and model-card goldens (``golden/``), one case per branch of the text.

The base is what a default run (``iocane run --set train.epochs=2`` on params.yaml) handed to
``render_report`` and ``render_model_card`` (``golden/default_run.json``); each other case
changes what one branch reads: the gate, the flags, C&W, the natural model, the labels of
``iocane evaluate``, a threat profile, a start from the user's weights, every ``train.method``,
the optimisers and schedules, a time budget's plan, the checkpoint and a collapse, the costs,
the certified band (with smoothing, without bounds, unsupported, broken, gated).
``render_case`` calls the public functions only, so the same module renders with the old code
and the new.

Regenerate the goldens (only when a change to the text is meant; say which in the change):
``.venv/bin/python -m tests.unit.reports.golden_cases tests/unit/reports/golden``.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path

from iocane.base.config import load_config
from iocane.reports.model_card import render_evaluation_card, render_model_card
from iocane.reports.report import render_report
from iocane.robustness.gate import check_gate
from tests.helpers.paths import PROJECT_ROOT

GOLDEN = Path(__file__).parent / "golden"
DELETE = object()  # a key the inputs lack (``None`` is a value: the JSON's null)


def _default_run() -> dict:
    """The default run's inputs, a fresh copy each time (a renderer may not change them)."""
    return json.loads((GOLDEN / "default_run.json").read_text())


def _report(change: Callable[[dict], None] | None = None) -> dict:
    evaluation = _default_run()["report"]
    if change:
        change(evaluation)
    return {"kind": "report", "evaluation": evaluation}


def _card(
    overrides: list[str] | None = None,
    change: Callable[[dict], None] | None = None,
    regate: bool = False,
) -> dict:
    """The default run's card inputs with params overrides and ``change`` applied to them;
    ``regate`` judges the changed evaluation again with the config's gate."""
    inputs = _default_run()["card"]  # its "overrides" are the run's own --set
    inputs["overrides"] = inputs["overrides"] + (overrides or [])
    if change:
        change(inputs)
    if regate:
        config = load_config(PROJECT_ROOT / "params.yaml", inputs["overrides"])
        inputs["verdict"] = check_gate(config.gate, inputs["evaluation"])
    return {"kind": "model_card", **inputs}


def _set(**values: object) -> Callable[[dict], None]:
    """A change that sets top-level keys of the inputs (``DELETE`` removes the key)."""

    def change(target: dict) -> None:
        for key, value in values.items():
            if value is DELETE:
                target.pop(key, None)
            else:
                target[key] = copy.deepcopy(value)

    return change


def _in(key: str, change: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda target: change(target[key])


def _both(*changes: Callable[[dict], None]) -> Callable[[dict], None]:
    def change(target: dict) -> None:
        for each in changes:
            each(target)

    return change


def _profile(natural: bool = True) -> dict:
    """A threat profile (``metrics/evaluate.json``'s ``threats``), as a default run's params
    ask for: the training threat reused, L0 and spatial worst cases, corruptions as a mean."""

    def threat(budget, text, measure, accuracies, members) -> dict:
        return {
            "budget": budget,
            "budget_text": text,
            "measure": measure,
            "hardened": accuracies[0],
            "natural": accuracies[1] if natural else None,
            "members": {
                "hardened": {name: values[0] for name, values in members.items()},
                "natural": {name: values[1] for name, values in members.items()}
                if natural
                else None,
            },
            "seconds": 1.5,
            "flags": [],
        }

    return {
        "linf": threat(0.1, "eps 0.1", "worst case", (0.8861, 0.0), {"pgd": (0.9, 0.0)}),
        "l0": threat(
            2,
            "2 pixels",
            "worst case",
            (0.61, 0.12),
            {"sparse_rs": (0.61, 0.12), "pgd_l0": (0.7, 0.2)},
        ),
        "corruptions": threat(
            [1, 3],
            "severities 1, 3",
            "mean",
            (0.9, 0.93),
            {"gaussian_noise": (0.85, 0.95), "contrast": (0.95, 0.91)},
        ),
        "spatial": threat(
            {"rotate": 15, "translate": 1, "rotations": 7, "translations": 3},
            "rotations up to 15 deg, shifts up to 1 px",
            "worst case",
            (0.5, 0.4),
            {"spatial_grid": (0.5, 0.4)},
        ),
    }


def _band(
    natural: bool = True,
    smoothing: bool = False,
    unsupported: str | None = None,
    broken: int = 0,
    bounds: bool = True,
    attacked: float = 0.8861,
) -> dict:
    """A certified band (``metrics/evaluate.json``'s ``certified``) at the default threat:
    IBP and CROWN on both models, optionally randomized smoothing, a model the verifier cannot
    bound, or certified points the suite broke."""
    proven = None if unsupported else 0.5
    methods = {"ibp": (0.42, 0.0), "crown": (0.5, 0.01)} if bounds else {}
    return {
        "norm": "Linf",
        "eps": 0.1,
        "bounds": {
            name: {
                "hardened": None if unsupported else figures[0],
                "natural": figures[1] if natural else None,
                "seconds": 0.75,
            }
            for name, figures in methods.items()
        },
        "certified_accuracy": proven if bounds else None,
        "natural_certified_accuracy": (0.01 if natural else None) if bounds else None,
        "attacked_accuracy": attacked,
        "gap": None if proven is None or not bounds else attacked - proven,
        "unsupported": unsupported,
        "natural_unsupported": None,
        "broken_certified": broken,
        "smoothing": None
        if not smoothing
        else {
            "sigma": 0.25,
            "n0": 100,
            "n": 1000,
            "alpha": 0.001,
            "hardened": {"0.25": 0.61, "0.5": 0.4},
            "natural": {"0.25": 0.3, "0.5": 0.05} if natural else None,
            "abstained": 0.125,
            "natural_abstained": 0.2 if natural else None,
            "seconds": 12.25,
        },
    }


GELU = "cannot bound layer 'features.3' (GELU): supported: Linear, Conv2d, ReLU"


def _report_cases() -> dict[str, dict]:
    flags = ["zero input gradients for 60% of samples", "FGSM stronger than PGD (0.41 < 0.52)"]
    cw = {"cw_median_l2": 0.9, "cw_not_found_share": 0.1, "cw_max_const": 1e6}
    return {
        "report-default-run": _report(),
        "report-flags-cw-cross-check": _report(
            _both(
                _in("hardened", _set(flags=flags, cw_flags=["C&W median exceeds L2 eps 1.400"])),
                _in("hardened", _set(broken_only_by_reference={"apgd-ce (reference)": 2}, **cw)),
                _in("hardened", _set(l2_half_accuracy_eps=0.7312)),
                _in("natural", _set(cw_median_l2=0.4, cw_not_found_share=0.0, cw_max_const=1e6)),
            )
        ),
        "report-cw-only-flags-no-half-eps": _report(
            _both(
                _in(
                    "hardened", _set(cw_flags=["C&W median not found"], l2_half_accuracy_eps=DELETE)
                ),
                _in("hardened", _set(cw_median_l2=None, cw_not_found_share=0.6, cw_max_const=1e6)),
            )
        ),
        "report-evaluated-alone": _report(
            _set(
                natural=None,
                labels={"hardened": "evaluated", "natural": "baseline"},
                alignment_targets_reached={"evaluated": 0.25},
            )
        ),
        "report-threat-profile": _report(_set(threats=_profile())),
        "report-evaluated-alone-threat-profile": _report(
            _set(
                natural=None,
                labels={"hardened": "evaluated", "natural": "baseline"},
                threats=_profile(natural=False),
            )
        ),
        "report-certified-smoothing": _report(_set(certified=_band(smoothing=True))),
        "report-smoothing-only": _report(_set(certified=_band(smoothing=True, bounds=False))),
        "report-evaluated-alone-certified-unsupported": _report(
            _set(
                natural=None,
                labels={"hardened": "evaluated", "natural": "baseline"},
                certified=_band(natural=False, unsupported=GELU),
                alignment_targets_reached={"evaluated": 0.25},
            )
        ),
        "report-evaluated-alone-cw": _report(
            _both(
                _set(natural=None, labels={"hardened": "evaluated", "natural": "baseline"}),
                _in("hardened", _set(cw_median_l2=1.25, l2_half_accuracy_eps=1.1)),
            )
        ),
    }


def _training_cases() -> dict[str, dict]:
    selected = {"selected_epoch": 14, "last_epoch": 20, "selection": "best", "best_epoch": 14}
    collapse = {
        "epoch": 9,
        "val_adv_accuracy": 0.0312,
        "best_val_adv_accuracy": 0.6875,
        "restored_epoch": 8,
    }
    budget = {"budget_minutes": 2.5, "budget_epochs": 3, "calibrated_epoch_seconds": 41.26}
    return {
        "card-no-training-record": _card(change=_set(training=None)),
        "card-selected-epoch": _card(change=_set(training=selected)),
        "card-catastrophic-overfitting": _card(
            ["train.method=fgsm"],
            _set(training={**selected, "catastrophic_overfitting": collapse}),
        ),
        "card-budget-decided": _card(change=_set(training={**budget, "epochs": 3})),
        "card-budget-one-epoch": _card(change=_set(training={**budget, "budget_epochs": 1})),
        "card-budget-grown-partial": _card(
            change=_set(training={**budget, "epochs": 5, "last_epoch_steps": 7, **selected})
        ),
        "card-budget-grown-whole": _card(change=_set(training={**budget, "epochs": 4})),
        "card-budget-stopped": _card(
            change=_set(training={**budget, "epochs": 2, "budget_stopped_after_epoch": 2})
        ),
    }


def _recipe_cases() -> dict[str, dict]:
    methods = ["pgd", "trades", "fgsm", "fgsm_rs", "nfgsm", "free", "alp", "multi"]
    cases = {f"card-method-{method}": _card([f"train.method={method}"]) for method in methods}
    cases["card-method-multi-l2"] = _card(
        ["train.method=multi", "train.norm=L2", "train.eps=0.5", "train.multi_other_eps=0.1"]
    )
    cases["card-adam-onecycle-width"] = _card(
        ["train.optimizer=adam", "train.lr=0.001", "train.lr_schedule=onecycle", "model.width=32"]
    )
    cases["card-adamw-warmup-onecycle-depth"] = _card(
        [
            "warmup.optimizer=adamw",
            "warmup.lr_schedule=onecycle",
            "model.name=wide_resnet",
            "model.depth=10",
            "model.width=2",
            "train.random_start=false",
        ]
    )
    return cases


def _card_cases() -> dict[str, dict]:
    flags = ["zero input gradients for 60% of samples"]
    cw = {"cw_median_l2": None, "cw_not_found_share": 0.6, "cw_max_const": 1e6}
    no_extras = {key: DELETE for key in ("overhead_pass_ratio", "price", "robust_gain_per_hour")}
    no_passes = {f"{stage}_forward_passes": None for stage in ("warmup", "train", "evaluate")}
    return {
        "card-default-run": _card(),  # its gate failed: two epochs of training
        "card-gate-passed": _card(
            change=_in("evaluation", _set(robust_accuracy=0.8125)), regate=True
        ),
        "card-gate-failed-flags-l2": _card(
            ["train.norm=L2", "train.eps=0.5"],
            _in("evaluation", _set(flags=flags, threat_model="L2", eps=0.5)),
            regate=True,
        ),
        "card-cw-not-found-and-flag": _card(
            change=_both(
                _in("evaluation", _set(cw_flags=["C&W median not found ... eps 1.400"], **cw)),
                _in(
                    "evaluation", lambda e: e["natural"].update(cw_median_l2=0.4, cw_max_const=1e6)
                ),
            ),
            regate=True,
        ),
        "card-cw-hardened-only": _card(
            change=_in(
                "evaluation", _set(cw_median_l2=0.912, cw_not_found_share=0.0, cw_max_const=1e6)
            ),
        ),
        "card-from-user-weights": _card(
            ["model.weights=model.pt"],
            _in("provenance", _set(base_model="models:/mine@prod (mine version 3, run r1)")),
        ),
        "card-no-costs-no-provenance-no-meta-extras": _card(
            change=_both(
                _set(costs=None, provenance={}),
                _in("meta", _set(image_size=DELETE, class_names=DELETE)),
            ),
        ),
        "card-costs-partial": _card(change=_in("costs", _set(**no_extras))),
        "card-costs-no-ratio-no-passes": _card(
            change=_in("costs", _set(overhead_time_ratio=None, **no_passes))
        ),
        "card-no-gate-checks": _card(change=_set(verdict={"passed": True, "checks": []})),
        "card-threat-profile": _card(change=_in("evaluation", _set(threats=_profile()))),
        "card-certified-gate": _card(
            ["gate.min_certified_accuracy=0.6"],
            _in("evaluation", _set(certified=_band(attacked=0.6528), threats=_profile())),
            regate=True,
        ),
        "card-certified-broken": _card(
            change=_in(
                "evaluation",
                _set(
                    certified=_band(broken=3, attacked=0.6528),
                    flags=["certified but broken: the attack suite broke 3 point(s) ..."],
                ),
            ),
            regate=True,
        ),
    }


def _evaluation_card_cases() -> dict[str, dict]:
    def evaluation_card(natural: bool, baseline: str | None) -> dict:
        inputs = _default_run()["card"]
        if not natural:
            inputs["evaluation"]["natural"] = None
        provenance = {"model": "mine.pt2 (sha256 ab12)"}
        if baseline:
            provenance["baseline"] = baseline
        return {
            "kind": "evaluation_card",
            "evaluation": inputs["evaluation"],
            "meta": inputs["meta"],
            "provenance": provenance,
            "title": "mine",
            "source": "mine.pt2",
        }

    return {
        "evaluation-card-alone": evaluation_card(natural=False, baseline=None),
        "evaluation-card-with-baseline": evaluation_card(natural=True, baseline="natural.pt2"),
        "evaluation-card-alone-certified": {
            **evaluation_card(natural=False, baseline=None),
            "evaluation": {
                **evaluation_card(natural=False, baseline=None)["evaluation"],
                "certified": _band(natural=False, smoothing=True, attacked=0.6528),
            },
        },
        "evaluation-card-alone-threat-profile": {
            **evaluation_card(natural=False, baseline=None),
            "evaluation": {
                **evaluation_card(natural=False, baseline=None)["evaluation"],
                "threats": _profile(natural=False),
            },
        },
    }


def cases() -> dict[str, dict]:
    """Every case by name (the golden file is ``golden/<name>.md``)."""
    return {
        **_report_cases(),
        **_card_cases(),
        **_training_cases(),
        **_recipe_cases(),
        **_evaluation_card_cases(),
    }


def render_case(case: dict) -> str:
    """The document a case's inputs render to, with the code imported now."""
    case = copy.deepcopy(case)
    kind = case.pop("kind")
    if kind == "report":
        return render_report(case["evaluation"])
    if kind == "evaluation_card":
        return render_evaluation_card(**case)
    config = load_config(PROJECT_ROOT / "params.yaml", case.pop("overrides"))
    return render_model_card(config, **case)


def write_goldens(folder: Path) -> None:
    """Render every case into ``folder/<name>.md`` (bytes as rendered, no newline conversion)."""
    for name, case in cases().items():
        (folder / f"{name}.md").write_bytes(render_case(case).encode())


if __name__ == "__main__":
    write_goldens(Path(sys.argv[1]))
