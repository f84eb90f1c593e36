"""The threat profile as people read it (``iocane.reports.threats``): the table's rows, the
corruptions' own rows, the figure's bars and file, the Prefect table's rows and the registry tag.
The rendered sections are held to goldens (``test_golden.py``, the ``*threat-profile`` cases)."""

from __future__ import annotations

from pathlib import Path

from iocane.reports.artifacts import metrics_table
from iocane.reports.figures import plot_threat_profile
from iocane.reports.threats import corruption_rows, profile_tag, threat_bars, threat_rows
from tests.unit.reports.golden_cases import GELU, _band, _profile

PNG = b"\x89PNG\r\n\x1a\n"


def _evaluation(threats: dict, natural: bool = True) -> dict:
    """What ``evaluate_models`` hands the report: the main suite at Linf 0.1, and the profile."""
    hardened = {"norm": "Linf", "eps": 0.1, "clean_accuracy": 0.99, "robust_accuracy": 0.88}
    baseline = {"clean_accuracy": 0.98, "robust_accuracy": 0.0} if natural else None
    return {"hardened": hardened, "natural": baseline, "threats": threats}


def test_rows_say_each_threat_its_budget_measure_and_hardest_member() -> None:
    rows = {row.threat: row for row in threat_rows(_profile())}
    assert list(rows) == ["linf", "l0", "corruptions", "spatial"]  # the params' order
    assert (rows["l0"].budget, rows["l0"].measure) == ("2 pixels", "worst case")
    assert (rows["l0"].natural, rows["l0"].hardened) == ("0.1200", "0.6100")
    assert rows["l0"].strongest == "sparse_rs (0.6100)"  # it left fewer points than pgd_l0
    assert rows["corruptions"].measure == "mean"
    alone = {row.threat: row for row in threat_rows(_profile(natural=False))}
    assert alone["l0"].natural == "n/a"


def test_each_corruption_has_its_row_and_no_profile_has_none() -> None:
    rows = corruption_rows(_profile())
    assert rows[0] == {"corruption": "gaussian_noise", "natural": "0.9500", "hardened": "0.8500"}
    assert corruption_rows(_profile(natural=False))[1]["natural"] == "n/a"
    assert corruption_rows({}) == [] and threat_rows({}) == []


def test_the_figure_draws_clean_the_training_threat_once_and_every_other_threat(
    tmp_path: Path,
) -> None:
    bars = threat_bars(_evaluation(_profile()))
    labels = [bar.label.split("\n")[0] for bar in bars]
    # linf 0.1 is the main suite's threat: drawn from it, not a second time from the profile
    assert labels == ["clean", "Linf", "l0", "corruptions", "spatial"]
    assert (bars[1].natural, bars[1].hardened) == (0.0, 0.88)
    assert (bars[2].natural, bars[2].hardened) == (0.12, 0.61)
    plot_threat_profile(bars, tmp_path / "profile.png")
    assert (tmp_path / "profile.png").read_bytes()[:8] == PNG
    # a model evaluated alone, and a run without a profile: clean and its own threat
    alone = threat_bars(_evaluation(_profile(natural=False), natural=False))
    assert all(bar.natural is None for bar in alone)
    plot_threat_profile(alone, tmp_path / "alone.png", {"hardened": "evaluated"})
    assert (tmp_path / "alone.png").read_bytes()[:8] == PNG
    assert [bar.label.split("\n")[0] for bar in threat_bars(_evaluation({}))] == ["clean", "Linf"]
    # with the certified band: the proven figure beside the measured one, natural and hardened
    certified = {**_evaluation({}), "certified": _band(attacked=0.88)}
    bars = threat_bars(certified)
    assert [bar.label for bar in bars] == ["clean", "Linf\neps 0.1", "Linf eps 0.1\nproven"]
    assert (bars[2].natural, bars[2].hardened) == (0.01, 0.5)
    plot_threat_profile(bars, tmp_path / "certified.png")
    assert (tmp_path / "certified.png").read_bytes()[:8] == PNG
    unsupported = {**_evaluation({}), "certified": _band(unsupported=GELU)}
    assert len(threat_bars(unsupported)) == 2  # nothing proven, nothing drawn


def test_the_prefect_table_and_the_registry_tag_carry_the_profile() -> None:
    metrics = {
        "clean_accuracy": 0.99,
        "robust_accuracy": 0.88,
        "attacks": {"pgd": 0.9},
        "natural": {"clean_accuracy": 0.98, "robust_accuracy": 0.0, "attacks": {"pgd": 0.0}},
        "threats": _profile(),
    }
    rows = metrics_table(metrics)
    assert {
        "metric": "threat_accuracy/l0 (2 pixels, worst case)",
        "hardened": 0.61,
        "natural": 0.12,
    } in rows
    tag = profile_tag(_profile())
    assert tag.startswith("linf (eps 0.1) 0.8861; l0 (2 pixels) 0.6100; corruptions")
    assert profile_tag(None) == "" and profile_tag({}) == ""
