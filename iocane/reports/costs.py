"""What hardening cost: passes through the model, wall time, and money.

The warmup, train and evaluate stages record their pass counts (``iocane.training.passes``) and
wall time in their metrics; ``cost_summary`` turns the three stages' figures into hours, the
overhead of adversarial over natural training, an estimated price, and the robust
accuracy gained per hour.

A run resumed after an interruption counts what it did after the resume (its metrics say where
it resumed); a compiled model (``runtime.compile``) is not counted, because its passes bypass the
module's hooks.
"""

from __future__ import annotations

from iocane.base.files import read_json
from iocane.base.layout import Layout


def _per_image(metrics: dict, key: str) -> float | None:
    images = metrics.get("images_trained")
    value = metrics.get(key)
    return value / images if images and value is not None else None


def cost_summary(
    layout: Layout, price_per_hour: float | None, evaluation: dict | None = None
) -> dict[str, float | None]:
    """Hours per stage and in all, adversarial-training overhead against natural training (in
    time and in passes, per training image), the estimated price, and, given the evaluation,
    the robust accuracy gained over the natural model per hour spent."""
    stages = {stage: read_json(layout.metrics_file(stage)) for stage in ("warmup", "train")}
    evaluate = read_json(layout.metrics_file("evaluate"))
    seconds = {stage: float(metrics.get("seconds", 0.0)) for stage, metrics in stages.items()}
    seconds["evaluate"] = float(evaluate.get("seconds", 0.0))
    hours = sum(seconds.values()) / 3600
    warmup, train = stages["warmup"], stages["train"]
    summary: dict[str, float | None] = {
        **{f"{stage}_hours": value / 3600 for stage, value in seconds.items()},
        "hours": hours,
        "overhead_time_ratio": _ratio(_per_image(train, "seconds"), _per_image(warmup, "seconds")),
        "overhead_pass_ratio": _ratio(_passes_per_image(train), _passes_per_image(warmup)),
        "price": hours * price_per_hour if price_per_hour is not None else None,
    }
    for stage, metrics in (*stages.items(), ("evaluate", evaluate)):
        for kind in ("forward_passes", "backward_passes"):
            summary[f"{stage}_{kind}"] = metrics.get(kind)
    if evaluation is not None:
        gain = evaluation["robust_accuracy"] - evaluation["natural"]["robust_accuracy"]
        summary["robust_gain"] = gain
        summary["robust_gain_per_hour"] = gain / hours if hours > 0 else None
    return summary


def _passes_per_image(metrics: dict) -> float | None:
    images = metrics.get("images_trained")
    forward, backward = metrics.get("forward_images"), metrics.get("backward_images")
    if not images or forward is None or backward is None:
        return None
    return (forward + backward) / images


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
