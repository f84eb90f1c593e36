"""The certified band as people read it: the version tags, the Prefect table's rows, and the
documents' wording (only the certified figure is called proven; nothing is called a guarantee)."""

from __future__ import annotations

import re

import pytest

from iocane.reports.artifacts import metrics_table
from iocane.reports.certified import band_text, certified_tags
from tests.unit.reports.golden_cases import GELU, _band, cases, render_case


def test_the_tags_give_the_band_from_proven_to_measured() -> None:
    assert certified_tags(None) == {} and band_text(None) is None
    assert certified_tags(_band(attacked=0.61)) == {
        "certified_accuracy": "0.500000",
        "certified_band": "0.5000-0.6100",
    }
    unsupported = certified_tags(_band(unsupported=GELU))
    assert unsupported["certified_accuracy"] == ""
    assert unsupported["certified_band"] == f"not certified ({GELU})"
    assert certified_tags(_band(bounds=False))["certified_band"] == (
        "not certified (no bound method run)"
    )


def test_a_long_verifier_message_is_cut_to_fit_a_tag() -> None:
    tag = certified_tags(_band(unsupported="x" * 5000))["certified_band"]
    assert len(tag) <= 4000 and tag.endswith(" ...")


def _evaluation(certified: dict | None) -> dict:
    natural = {"clean_accuracy": 0.9, "robust_accuracy": 0.1, "attacks": {"pgd": 0.1}}
    document = {
        "clean_accuracy": 0.8,
        "robust_accuracy": 0.6,
        "attacks": {"pgd": 0.6},
        "natural": natural,
    }
    if certified is not None:
        document["certified"] = certified
    return document


def test_the_prefect_table_adds_the_band_after_the_attacks() -> None:
    before = [row["metric"] for row in metrics_table(_evaluation(None))]
    assert len(before) == 3 and not any("certified" in metric for metric in before)
    rows = metrics_table(_evaluation(_band(smoothing=True, attacked=0.6)))
    added = {row["metric"]: (row["hardened"], row["natural"]) for row in rows[3:]}
    assert added == {
        "certified_accuracy (Linf eps 0.1, proven; best of bounds)": (0.5, 0.01),
        "certified_accuracy/ibp (Linf eps 0.1)": (0.42, 0.0),
        "certified_accuracy/crown (Linf eps 0.1)": (0.5, 0.01),
        "certified_gap (attacked - proven)": (pytest.approx(0.1), None),
        "smoothing/certified_accuracy/r0.25 (L2, sigma 0.25)": (0.61, 0.3),
        "smoothing/certified_accuracy/r0.5 (L2, sigma 0.25)": (0.4, 0.05),
    }


def _certified(case: dict) -> bool:
    return "certified" in case["evaluation"]


@pytest.mark.parametrize("name", sorted(cases()))
def test_only_the_certified_figure_is_called_proven(name: str) -> None:
    """Every golden case: no document calls anything a guarantee; without a certification none
    says "proven"; with one, each "proven" stands beside the certified figure."""
    case = cases()[name]
    text = render_case(case)
    assert not re.search(r"guarantee", text, re.IGNORECASE)
    section = re.search(r"^## What is proven\n.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    outside = text.replace(section.group(0), "") if section else text
    lines = [line for line in outside.splitlines() if re.search(r"\bproven\b", line, re.I)]
    if not _certified(case):
        assert section is None and lines == []
    for line in lines:  # the card's headline and its known limit
        assert "certified accuracy" in line.lower(), line
