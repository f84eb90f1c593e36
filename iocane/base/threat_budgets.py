"""The threat profile's budgets: which threats there are, how a budget is checked and stated.

``evaluate.threats`` maps a threat's name to its budget (``linf: 0.1``, ``l0: 12`` pixels,
``corruptions: [1, 3, 5]`` severities, ``spatial: {rotate: 30, translate: 3}``). The config sits
in the base layer and must not import torch (bad params exit before it loads), so the part of the
threat table the config needs lives here: the names in profile order, each threat's norm (for the
norm-based ones) and measure, the budget check and the budget's text. ``attacks.threats`` adds to
each the members that attack it; a test holds the two tables to the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Measure = Literal["worst case", "mean"]
SEVERITIES = (1, 2, 3, 4, 5)  # Hendrycks & Dietterich 2019's five levels
SPATIAL_KEYS = ("rotate", "translate", "rotations", "translations")


class BudgetError(ValueError):
    """A budget that cannot be run; ``key`` is the part of it at fault ("" for the whole),
    relative to the threat (``rotate`` for ``spatial``'s ``rotate``)."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, key: str = "") -> float:
    if not _is_number(value) or value != value or value in (float("inf"), float("-inf")):
        raise BudgetError(f"expected a finite number, got {type(value).__name__} {value!r}", key)
    return value


def _whole(value: Any, key: str = "", what: str = "a whole number") -> int:
    """An int, or an integral float (12.0): a count of pixels or grid points, at least 1."""
    number = _number(value, key)
    if number != int(number) or number < 1:
        raise BudgetError(f"expected {what} of at least 1, got {value!r}", key)
    return value


def _linf(budget: Any) -> Any:
    eps = _number(budget)
    if not 0 < eps <= 1:
        raise BudgetError(f"eps {eps!r} is outside (0, 1] (pixels are in [0, 1])")
    return budget


def _l2(budget: Any) -> Any:
    if not _number(budget) > 0:
        raise BudgetError(f"eps {budget!r} must be above 0")
    return budget


def _pixels(budget: Any) -> Any:
    return _whole(budget, what="a whole number of pixels")


def _severities(budget: Any) -> Any:
    if not isinstance(budget, (list, tuple)) or not budget:
        raise BudgetError(f"expected a list of severities (1 to 5), got {budget!r}")
    for severity in budget:
        if isinstance(severity, bool) or not isinstance(severity, int):
            raise BudgetError(f"severity {severity!r} is not a whole number (1 to 5)")
        if severity not in SEVERITIES:
            raise BudgetError(f"severity {severity} is outside 1 to 5")
    if len(set(budget)) != len(budget):
        raise BudgetError(f"a severity is listed twice in {list(budget)}")
    return budget


def _spatial(budget: Any) -> Any:
    if not isinstance(budget, Mapping):
        raise BudgetError(
            f"expected a mapping (rotate, translate, rotations, translations), got {budget!r}"
        )
    unknown = sorted(str(key) for key in budget if key not in SPATIAL_KEYS)
    if unknown:
        raise BudgetError(f"unknown key (known: {', '.join(SPATIAL_KEYS)})", unknown[0])
    for key in ("rotate", "translate"):
        if key not in budget:
            raise BudgetError("missing (rotate in degrees, translate in pixels; 0 for none)", key)
    rotate, translate = (
        _number(budget["rotate"], "rotate"),
        _number(budget["translate"], "translate"),
    )
    if not 0 <= rotate <= 180:
        raise BudgetError(f"{rotate!r} degrees is outside [0, 180]", "rotate")
    if translate < 0:
        raise BudgetError(f"{translate!r} pixels is below 0", "translate")
    if rotate == 0 and translate == 0:
        raise BudgetError("rotate and translate are both 0: no transformation to search", "rotate")
    for key in ("rotations", "translations"):
        if key in budget:
            _whole(budget[key], key, "a whole number of grid points")
    return budget


def _eps_text(budget: Any) -> str:
    return f"eps {budget:g}"


def _pixels_text(budget: Any) -> str:
    return f"{int(budget)} pixel" + ("" if int(budget) == 1 else "s")


def _patch_text(budget: Any) -> str:
    return f"{int(budget)}x{int(budget)} patch"


def _severities_text(budget: Any) -> str:
    word = "severity" if len(budget) == 1 else "severities"
    return f"{word} {', '.join(str(severity) for severity in budget)}"


def _spatial_text(budget: Any) -> str:
    text = f"rotations up to {budget['rotate']:g} deg, shifts up to {budget['translate']:g} px"
    if "rotations" in budget or "translations" in budget:
        grid = (budget.get("rotations", "preset's"), budget.get("translations", "preset's"))
        text += f" (grid: {grid[0]} angles, {grid[1]} shifts per axis)"
    return text


@dataclass(frozen=True)
class ThreatBudget:
    """The torch-free half of a threat's entry: its name (the params key), the norm its members
    are registered for (None for corruptions and spatial), how its accuracy is measured, and
    how its budget is checked (a ``BudgetError`` naming the problem) and stated."""

    name: str
    norm: str | None
    measure: Measure
    check: Callable[[Any], Any]
    text: Callable[[Any], str]


BUDGETS: tuple[ThreatBudget, ...] = (
    ThreatBudget("linf", "Linf", "worst case", _linf, _eps_text),
    ThreatBudget("l2", "L2", "worst case", _l2, _eps_text),
    ThreatBudget("l0", "L0", "worst case", _pixels, _pixels_text),
    ThreatBudget("patch", "patch", "worst case", _pixels, _patch_text),
    ThreatBudget("corruptions", None, "mean", _severities, _severities_text),
    ThreatBudget("spatial", None, "worst case", _spatial, _spatial_text),
)
THREAT_NAMES = tuple(budget.name for budget in BUDGETS)


def threat_budget(name: str) -> ThreatBudget:
    """The entry of ``name``; an unknown one is a ``BudgetError`` listing the known ones."""
    for budget in BUDGETS:
        if budget.name == name:
            return budget
    raise BudgetError(f"unknown threat {name!r} (known: {', '.join(THREAT_NAMES)})")


def check_threats(threats: Mapping[str, Any]) -> None:
    """Check every budget of an ``evaluate.threats`` mapping; the first bad one raises a
    ``BudgetError`` whose key is ``<name>`` or ``<name>.<part>``."""
    for name, budget in threats.items():
        try:
            threat_budget(str(name)).check(budget)
        except BudgetError as error:
            key = f"{name}.{error.key}" if error.key else str(name)
            raise BudgetError(error.message, key) from None
