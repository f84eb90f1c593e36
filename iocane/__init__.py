"""iocane: harden image classifiers against adversarial examples, prove it, and gate promotion.

``from iocane import evaluate_robustness`` gives the validation suite (DESIGN.md's contract).
It is imported on first use, not with the package: ``iocane.cli`` imports this package, and bad
params must exit before torch loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate_robustness"]

if TYPE_CHECKING:
    from iocane.robustness.suite import evaluate_robustness


def __getattr__(name: str) -> Any:
    """The lazy attributes of the package (PEP 562): ``evaluate_robustness``."""
    if name == "evaluate_robustness":
        from iocane.robustness.suite import evaluate_robustness

        return evaluate_robustness
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
