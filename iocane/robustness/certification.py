"""The certified band: what is proven about a model beside what the attack suite measured.

The suite's worst-case robust accuracy is an upper bound on true robustness (a stronger attack
may find more); a certificate is a lower bound (each certified point is proven correct over the
whole threat ball). ``evaluate.certify`` asks for either or both of:

- bound propagation (``iocane.certify.certify_bounds``: IBP, CROWN) at the training threat
  (``train.norm``, ``train.eps``), on the points the suite attacked; the certified accuracy is
  the per-sample union of the methods run (``best``: each is sound);
- randomized smoothing (``iocane.certify.smoothing``), an L2 certificate of the smoothed
  classifier at the radii the params list.

A model the verifier cannot bound (a layer it does not know) gets its message and null figures,
never a wrong number. A point that is certified and yet broken by the suite is impossible for a
sound verifier: ``broken_certified`` counts them, and any raises a trust flag on the hardened
model, so ``gate.require_trusted`` fails the evaluation.

``certify_models`` returns the ``certified`` document of ``metrics/evaluate.json`` and the flags.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from iocane.base.config import Config
from iocane.base.config.evaluation import SmoothingConfig
from iocane.certify import Certificate, UnsupportedModel, certify_bounds
from iocane.certify.smoothing import smoothed_certify

log = logging.getLogger("iocane")


@dataclass
class Certification:
    """The ``certified`` section of ``metrics/evaluate.json``, and the trust flags it raised
    (to join the hardened model's)."""

    document: dict
    flags: list[str] = field(default_factory=list)


def certify_models(
    config: Config,
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    robust_per_sample: Mapping[str, Sequence[bool]],
    attacked_accuracy: float,
) -> Certification:
    """Certify ``models`` (``hardened``, and ``natural`` if present) on the suite's ``images``
    as ``config.evaluate.certify`` asks; ``robust_per_sample`` is, per model, which points
    the suite left standing (``RobustnessResult.robust_per_sample``), ``attacked_accuracy``
    the hardened model's worst case: the band's upper edge."""
    certify = config.evaluate.certify
    if certify is None:
        raise ValueError("certify_models needs evaluate.certify")
    norm, eps = config.train.norm, config.train.eps
    device = next(models["hardened"].parameters()).device
    images, labels = images.to(device), labels.to(device)
    certificates, unsupported = {}, {}
    for label, model in models.items():
        if certify.bounds:
            log.info(
                "certifying the %s model (%s, eps %g): %s",
                label,
                norm,
                eps,
                ", ".join(certify.bounds),
            )
            certificates[label], unsupported[label] = _bounds(
                model, images, labels, norm, eps, certify.bounds, config.evaluate.batch_size
            )
    broken = {
        label: _broken(certificates[label], robust_per_sample[label])
        for label in certificates
        if certificates[label] is not None
    }
    document = _document(norm, eps, certify.bounds, certificates, unsupported, attacked_accuracy)
    document["broken_certified"] = sum(counts["best"] for counts in broken.values())
    document["smoothing"] = (
        None
        if certify.smoothing is None
        else _smoothing(certify.smoothing, models, images, labels, config)
    )
    return Certification(document, _trust_flags(broken))


def _bounds(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str,
    eps: float,
    methods: Sequence[str],
    batch_size: int,
) -> tuple[dict[str, Certificate] | None, str | None]:
    """Each method's certificate and ``best``, or ``None`` and the verifier's message for a
    model it cannot bound."""
    try:  # certify_bounds traces the model first: an unknown layer fails before any bound
        certificates = certify_bounds(
            model,
            images,
            labels,
            norm=norm,
            eps=eps,
            methods=tuple(methods),
            batch_size=batch_size,
        )
    except UnsupportedModel as error:
        log.warning("  not certified: %s", error)
        return None, str(error)
    for name, found in certificates.items():
        log.info("  %s: certified accuracy %.4f (%.1f s)", name, found.accuracy, found.seconds)
    return certificates, None


def _broken(certificates: dict[str, Certificate], robust: Sequence[bool]) -> dict[str, int]:
    """Per method (and ``best``), the points it certified that the suite broke (or that the
    model misclassified clean: the clean image is in the ball too)."""
    standing = torch.as_tensor(list(robust), dtype=torch.bool)
    return {
        name: int((certificate.certified.cpu() & ~standing).sum())
        for name, certificate in certificates.items()
    }


def _document(
    norm: str,
    eps: float,
    methods: Sequence[str],
    certificates: dict[str, dict[str, Certificate] | None],
    unsupported: dict[str, str | None],
    attacked_accuracy: float,
) -> dict:
    """The band: per method each model's certified accuracy, the hardened model's best beside
    the attacked figure, and the gap between them (null where nothing was certified)."""

    def accuracy(label: str, method: str) -> float | None:
        found = certificates.get(label)
        return None if found is None else found[method].accuracy

    bounds = {
        method: {
            "hardened": accuracy("hardened", method),
            "natural": accuracy("natural", method),
            "seconds": sum(
                found[method].seconds for found in certificates.values() if found is not None
            ),
        }
        for method in methods
    }
    certified = accuracy("hardened", "best") if methods else None
    return {
        "norm": norm,
        "eps": eps,
        "bounds": bounds,
        "certified_accuracy": certified,
        "natural_certified_accuracy": accuracy("natural", "best") if methods else None,
        "attacked_accuracy": attacked_accuracy,
        "gap": None if certified is None else attacked_accuracy - certified,
        "unsupported": unsupported.get("hardened"),
        "natural_unsupported": unsupported.get("natural"),
    }


def _trust_flags(broken: dict[str, dict[str, int]]) -> list[str]:
    """One flag for certified points the suite broke, naming the model and method."""
    parts = [
        f"{label} model: "
        + ", ".join(f"{method} {count}" for method, count in counts.items() if method != "best")
        for label, counts in broken.items()
        if counts.get("best")
    ]
    if not parts:
        return []
    total = sum(counts.get("best", 0) for counts in broken.values())
    return [
        f"certified but broken: the attack suite broke {total} point(s) the verifier certified "
        f"({'; '.join(parts)}): a sound bound never allows it, so the bounds (or the attacks' "
        "ball) are wrong and the certified accuracy cannot be trusted"
    ]


def _smoothing(
    smoothing: SmoothingConfig,
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    config: Config,
) -> dict:
    """Randomized smoothing's certified accuracy at each radius, per model, with its cost."""
    started = time.perf_counter()
    figures: dict[str, dict[str, float] | None] = {"hardened": None, "natural": None}
    abstained = {}
    for label, model in models.items():
        log.info(
            "randomized smoothing (%s): sigma %g, n0 %d, n %d, alpha %g, %d images",
            label,
            smoothing.sigma,
            smoothing.n0,
            smoothing.n,
            smoothing.alpha,
            len(labels),
        )
        certificate = smoothed_certify(
            model,
            images,
            labels,
            sigma=smoothing.sigma,
            n0=smoothing.n0,
            n=smoothing.n,
            alpha=smoothing.alpha,
            radii=smoothing.radii,
            batch_size=config.evaluate.batch_size,
            seed=config.seed,
        )
        figures[label] = {
            radius_key(radius): certificate.certified_accuracy[radius] for radius in smoothing.radii
        }
        abstained[label] = certificate.abstained
    return {
        "sigma": smoothing.sigma,
        "n0": smoothing.n0,
        "n": smoothing.n,
        "alpha": smoothing.alpha,
        **figures,
        "abstained": abstained["hardened"],
        "natural_abstained": abstained.get("natural"),
        "seconds": time.perf_counter() - started,
    }


def radius_key(radius: float) -> str:
    """A radius as the document's key: ``0.25``, ``1``."""
    return f"{radius:g}"
