"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): certified L2 radii for any classifier.

The smoothed classifier ``g(x) = argmax_c P(f(x + noise) = c)``, noise ``N(0, sigma^2 I)``, is
robust within the L2 radius ``sigma * Phi^-1(p_A)`` of ``x`` when its top class has probability
``p_A > 1/2`` (Cohen et al.'s Theorem 1, in the form of their CERTIFY). ``p_A`` is not known; it
is bounded from below by Monte Carlo, so each radius holds with probability at least
``1 - alpha`` over the noise:

- ``smoothed_certify``: Cohen's CERTIFY. ``n0`` noisy copies select the top class ``c_A``;
  ``n`` fresh copies count it; the one-sided Clopper-Pearson bound at confidence ``1 - alpha``
  bounds ``p_A``; below 1/2 the point abstains, else its radius is ``sigma * Phi^-1(p_A_lower)``.
- ``smoothed_predict``: Cohen's PREDICT. ``n`` noisy copies; the top two counts go to a
  two-sided binomial test at 1/2; above ``alpha`` the point abstains.

Noise is added to images in [0, 1] pixel space without clipping (as Cohen et al.). The draws
come from a ``torch.Generator`` seeded with ``seed`` on the images' device, never the global
stream, so a seed gives the same certificate (on the same device and batch size). Noisy copies
of several images share a forward pass (``batch_size`` copies each). The model runs in eval
mode without gradients and is left in the mode it came in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attacks.threat import make_generator

ABSTAIN = -1  # the prediction of a point the smoothed classifier does not decide


@dataclass
class SmoothingCertificate:
    """Cohen's CERTIFY on a set of points: per point the smoothed prediction and its radius."""

    sigma: float
    n0: int
    n: int
    alpha: float
    predictions: torch.Tensor  # (N,) int64 on CPU, ABSTAIN (-1) where the point abstained
    radii: torch.Tensor  # (N,) float64 on CPU, certified L2 radius of the prediction (0: abstained)
    certified_accuracy: dict[float, float]  # radius -> share predicted correctly with radius >= r
    abstained: float  # share of abstentions
    seconds: float


def clopper_pearson_lower(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """The one-sided Clopper-Pearson lower bound of a binomial proportion at confidence
    ``1 - alpha``: ``Beta(alpha; k, n - k + 1)``, and 0 where ``k`` is 0 (no bound above 0)."""
    from scipy.stats import beta  # scipy.stats takes a second to import: only when certifying

    successes = np.asarray(successes, dtype=np.int64)
    with np.errstate(invalid="ignore"):  # beta.ppf is nan at k = 0, where the bound is 0
        bound = beta.ppf(alpha, successes, trials - successes + 1)
    return np.where(successes > 0, bound, 0.0)


def _check_arguments(sigma: float, counts: dict[str, int], alpha: float, batch_size: int) -> None:
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"smoothing: sigma must be > 0, got {sigma!r}")
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"smoothing: {name} must be at least 1, got {value!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"smoothing: alpha must be in (0, 1), got {alpha!r}")
    if batch_size < 1:
        raise ValueError(f"smoothing: batch_size must be at least 1, got {batch_size!r}")


@torch.no_grad()
def noisy_class_counts(
    model: nn.Module,
    images: torch.Tensor,
    *,
    sigma: float,
    num_samples: int,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """(N, K) int64 on the images' device: per image, how many of ``num_samples`` noisy copies
    ``images + N(0, sigma^2)`` the model (as it is: the caller sets its mode) puts in each class.

    The copies of all images form one stream, image after image, cut into forward passes of
    ``batch_size``: a pass may hold the last copies of one image and the first of the next."""
    n_images, total = len(images), len(images) * num_samples
    counts: torch.Tensor | None = None
    for start in range(0, total, batch_size):
        # The images of copies start..end of the stream (built per pass: Cohen's n of 100,000
        # over a test set would make a whole-stream index of gigabytes).
        copies = torch.arange(start, min(start + batch_size, total), device=images.device)
        which = copies // num_samples
        clean = images[which]
        noise = torch.randn(
            clean.shape, generator=generator, device=clean.device, dtype=clean.dtype
        )
        logits = model(clean + sigma * noise)
        num_classes = logits.shape[1]
        if counts is None:  # the classes are known at the first pass
            counts = torch.zeros(n_images * num_classes, dtype=torch.int64, device=images.device)
        predicted = logits.argmax(1)
        # One flat index per (image, class): bincount adds the votes of the whole pass at once.
        counts += torch.bincount(which * num_classes + predicted, minlength=len(counts))
    if counts is None:
        raise ValueError("smoothing: no images to sample noise around")
    return counts.view(n_images, -1)


def _certified_accuracy(
    predictions: torch.Tensor, radii: torch.Tensor, labels: torch.Tensor, radii_asked: Sequence
) -> dict[float, float]:
    correct = predictions == labels.cpu()
    return {
        float(radius): float((correct & (radii >= float(radius))).double().mean())
        for radius in radii_asked
    }


def _in_eval_mode(model: nn.Module) -> bool:
    """Put the model in eval mode; return the mode it was in (to restore)."""
    was_training = model.training
    model.eval()
    return was_training


def smoothed_certify(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    radii: Sequence[float],
    batch_size: int,
    seed: int,
) -> SmoothingCertificate:
    """Cohen et al.'s CERTIFY for every image (N, C, H, W) in [0, 1] with its label (N,).

    Each returned radius holds with probability at least ``1 - alpha`` over the noise (per
    point). ``certified_accuracy[r]`` is the share of points whose smoothed prediction is their
    label with a radius of at least ``r`` (abstentions never count). The cost is
    ``N * (n0 + n)`` forward passes of one image each."""
    from scipy.stats import norm  # scipy.stats takes a second to import: only when certifying

    _check_arguments(sigma, {"n0": n0, "n": n}, alpha, batch_size)
    if len(images) != len(labels):
        raise ValueError(f"smoothing: {len(images)} images but {len(labels)} labels")
    if any(not (math.isfinite(float(r)) and float(r) >= 0) for r in radii):
        raise ValueError(f"smoothing: radii must be finite and >= 0, got {list(radii)!r}")
    started = time.perf_counter()
    generator = make_generator(seed, images.device)
    was_training = _in_eval_mode(model)
    try:
        sampling = {"sigma": sigma, "batch_size": batch_size, "generator": generator}
        selection = noisy_class_counts(model, images, num_samples=n0, **sampling)
        top_class = selection.argmax(1)  # Cohen's c_A from the n0 selection copies
        estimation = noisy_class_counts(model, images, num_samples=n, **sampling)
    finally:
        model.train(was_training)
    top_count = estimation.gather(1, top_class[:, None]).squeeze(1).cpu().numpy()
    p_lower = clopper_pearson_lower(top_count, n, alpha)
    decided = p_lower >= 0.5  # Cohen abstains when p_A_lower < 1/2
    radius = np.where(decided, sigma * norm.ppf(np.where(decided, p_lower, 0.5)), 0.0)
    predictions = torch.where(
        torch.from_numpy(decided), top_class.cpu(), torch.tensor(ABSTAIN, dtype=torch.int64)
    )
    radii_tensor = torch.from_numpy(radius.astype(np.float64))
    return SmoothingCertificate(
        sigma=sigma,
        n0=n0,
        n=n,
        alpha=alpha,
        predictions=predictions,
        radii=radii_tensor,
        certified_accuracy=_certified_accuracy(predictions, radii_tensor, labels, radii),
        abstained=float((~decided).mean()),
        seconds=time.perf_counter() - started,
    )


def smoothed_predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    sigma: float,
    n: int,
    alpha: float,
    batch_size: int,
    seed: int,
) -> torch.Tensor:
    """Cohen et al.'s PREDICT: (N,) int64 on CPU, the smoothed classifier's class per image or
    ABSTAIN (-1). With ``n`` noisy copies, the top class is returned when the two-sided binomial
    test of the top two counts at 1/2 has a p-value of at most ``alpha``; the returned class
    differs from ``g(x)`` with probability at most ``alpha`` (Cohen et al.'s Proposition 2)."""
    from scipy.stats import binomtest  # a second to import: only when predicting

    _check_arguments(sigma, {"n": n}, alpha, batch_size)
    generator = make_generator(seed, images.device)
    was_training = _in_eval_mode(model)
    try:
        counts = noisy_class_counts(
            model, images, sigma=sigma, num_samples=n, batch_size=batch_size, generator=generator
        ).cpu()
    finally:
        model.train(was_training)
    if counts.shape[1] < 2:
        raise ValueError("smoothing: the model has one output; PREDICT compares two classes")
    top_two_counts, top_two = counts.topk(2, dim=1)
    predictions = torch.full((len(counts),), ABSTAIN, dtype=torch.int64)
    for index, (first, second) in enumerate(top_two_counts.tolist()):
        if binomtest(first, first + second, 0.5).pvalue <= alpha:
            predictions[index] = top_two[index, 0]
    return predictions
