"""write_json writes strict JSON: a NaN or an infinity fails loudly, naming where it is."""

from __future__ import annotations

import json

import pytest

from iocane.base.files import NonFiniteValue, non_finite_paths, write_json


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_value_is_refused_and_nothing_is_written(tmp_path, bad) -> None:
    path = tmp_path / "metrics.json"
    with pytest.raises(NonFiniteValue, match=r"natural\.cw_median_l2"):
        write_json(path, {"natural": {"cw_median_l2": bad}, "clean_accuracy": 0.9})
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_none_is_written_as_null(tmp_path) -> None:
    path = tmp_path / "metrics.json"
    write_json(path, {"cw_median_l2": None, "curve": [0.5, 0.25]})
    assert json.loads(path.read_text()) == {"cw_median_l2": None, "curve": [0.5, 0.25]}


def test_non_finite_paths_finds_every_one() -> None:
    tree = {"a": [1.0, float("nan")], "b": {"c": float("inf"), "d": "inf"}, "e": 3}
    assert non_finite_paths(tree) == ["a[1]", "b.c"]
