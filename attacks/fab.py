"""FAB-T: the targeted Fast Adaptive Boundary attack of Croce & Hein 2020 ("Minimally distorted
adversarial examples with a fast adaptive boundary attack", ICML 2020), as AutoAttack's standard
ensemble runs it.

Threat model: Linf or L2, in [0,1]. FAB is a minimal-norm attack: it looks for the adversarial
example closest to the image, not for any one inside the eps ball. Towards a target class t it
iterates:
- linearise the logit difference f = z_t - z_y at the current point x (one backward pass);
- project both x and the original image x_orig onto the linearised boundary {f = 0}
  intersected with the [0,1] box, in the chosen norm (exactly: ``project_linf``, ``project_l2``);
- step to the biased convex combination (1 - a) (x + eta d) + a (x_orig + eta d_orig), where
  a = min(|d| / (|d| + |d_orig|), alpha_max) keeps the iterate near the image and eta > 1
  overshoots the boundary a little;
- once the iterate fools the model, keep it if it is the closest so far and step back towards
  the image: x_orig + beta (x - x_orig).
The targets are the ``n_target_classes`` runner-up classes by logit on the clean input (as in
APGD-T). The first run per target starts at the image; each further restart starts at a random
point at distance min(best distance so far, eps) / 2 from it.

``minimal`` returns the closest adversarial example found and its distance (inf where none).
Called as an attack, FAB-T drops a sample once it has an adversarial example within eps (early
stopping) and returns that example; where the closest one found lies beyond eps it returns its
projection onto the eps ball (which fools only if the model is not robust there, as C&W does),
and the clean image where none was found. Samples already misclassified are returned unchanged.

Example::

    attack = FABTargeted(eps=0.1, norm="Linf", steps=100)
    adversarial = attack(model, images, labels)  # (N, C, H, W) in [0, 1], within eps of images
    closest, distance = attack.minimal(model, images, labels)  # distance inf where none found
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from attacks.threat import make_generator, threat_model

_TINY = 1e-12  # guards divisions by a zero slope
_MIN_STEP = 1e-8  # the reference's floor on the two projections' lengths when mixing them

# (w, b, lo, hi) -> d: the closest d to 0 on {w.d + b = 0} within {lo <= d <= hi}, per row
Projection = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _project_on_hyperplane(
    w: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, rate: torch.Tensor
) -> torch.Tensor:
    """Solve w.d + b = 0 for d in the box [lo, hi] (lo <= 0 <= hi) along the path
    u_i(tau) = min(tau * rate_i, cap_i), d_i = -sign(b * w_i) * u_i, with the smallest tau.

    Each coordinate moves in the direction that brings w.d towards -b, at speed ``rate_i``, until
    it hits its box face at distance cap_i. The progress sum_i |w_i| u_i(tau) is piecewise linear
    and non-decreasing in tau, with knots at cap_i / rate_i: sorting the knots gives the segment
    where it reaches |b| and then tau in closed form. Unit rates give the minimal Linf solution,
    rates |w_i| the minimal L2 one (the KKT point d = clip(-lambda w, lo, hi)). Where the
    hyperplane misses the box, every coordinate goes to its face: the box corner closest to it.
    """
    direction = -torch.sign(b)[:, None] * torch.sign(w)  # -1, 0 or +1 per coordinate
    cap = torch.where(direction < 0, -lo, hi).clamp(min=0.0)
    gain = w.abs()
    target = b.abs()[:, None]
    knots = torch.where(rate > 0, cap / rate.clamp(min=_TINY), torch.zeros_like(cap))
    knots, order = knots.sort(dim=1)
    gain_sorted, rate_sorted, cap_sorted = (
        gain.gather(1, order),
        rate.gather(1, order),
        cap.gather(1, order),
    )
    # Before knot k, the coordinates j < k sit on their faces and the others still move:
    # progress(tau) = saturated_k + tau * slope_k on the segment ending at knot k.
    reach = gain_sorted * cap_sorted
    saturated = torch.cat((torch.zeros_like(reach[:, :1]), reach[:, :-1].cumsum(dim=1)), dim=1)
    slope = (gain_sorted * rate_sorted).flip(1).cumsum(dim=1).flip(1)
    progress_at_knots = saturated + knots * slope
    segment = (progress_at_knots < target).sum(dim=1, keepdim=True)
    infeasible = segment.squeeze(1) == w.shape[1]  # even the best corner falls short
    segment = segment.clamp(max=w.shape[1] - 1)
    tau = (target - saturated.gather(1, segment)) / slope.gather(1, segment).clamp(min=_TINY)
    moved = torch.minimum(tau * rate, cap)
    moved = torch.where(infeasible[:, None], cap, moved)  # (tau is past every knot there too)
    return direction * moved


def project_linf(
    w: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    """argmin ||d||_inf over {w.d + b = 0, lo <= d <= hi}, per row of (N, D) w, lo, hi and (N,)
    b, with lo <= 0 <= hi. Where the hyperplane misses the box: the corner closest to it."""
    return _project_on_hyperplane(w, b, lo, hi, rate=torch.ones_like(w))


def project_l2(
    w: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    """argmin ||d||_2 over {w.d + b = 0, lo <= d <= hi}, per row of (N, D) w, lo, hi and (N,)
    b, with lo <= 0 <= hi. Where the hyperplane misses the box: the corner closest to it."""
    return _project_on_hyperplane(w, b, lo, hi, rate=w.abs())


PROJECTIONS: dict[str, Projection] = {"Linf": project_linf, "L2": project_l2}


def _gap_and_grad(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """z_t - z_y per sample and its gradient with respect to the input: one backward pass."""
    with torch.enable_grad():
        inputs = images.detach().requires_grad_(True)
        logits = model(inputs)
        gap = logits.gather(1, targets[:, None]) - logits.gather(1, labels[:, None])
        (grad,) = torch.autograd.grad(gap.sum(), inputs)
    return gap.detach().squeeze(1), grad.detach()


def _random_sphere(
    shape: torch.Size, norm: str, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Random directions of unit ``norm``: a uniform cube (Linf) or a Gaussian (L2), rescaled."""
    if norm == "Linf":
        direction = torch.rand(shape, generator=generator, device=device) * 2 - 1
    else:
        direction = torch.randn(shape, generator=generator, device=device)
    length = threat_model(norm).norm(direction).clamp(min=_TINY)
    return direction / length.view(-1, *([1] * (len(shape) - 1)))


def fab_run(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    start: torch.Tensor,
    *,
    norm: str,
    steps: int,
    alpha_max: float,
    eta: float,
    beta: float,
    stop_at: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB run from ``start`` towards ``targets``: the closest adversarial example found
    per sample and its distance to the image (inf where none). With ``stop_at``, a sample
    leaves the run once it has one at distance <= stop_at."""
    threat, project = threat_model(norm), PROJECTIONS[norm]
    n = len(images)
    view = (-1,) + (1,) * (images.dim() - 1)
    current = start.detach().clone()
    best = images.clone()
    distance = torch.full((n,), float("inf"), device=images.device, dtype=images.dtype)
    everyone = torch.arange(n, device=images.device)
    for _ in range(steps):
        active = everyone if stop_at is None else (distance > stop_at).nonzero().squeeze(1)
        if len(active) == 0:
            break
        x, original, y = current[active], images[active], labels[active]
        gap, grad = _gap_and_grad(model, x, y, targets[active])
        # The linearised boundary {gap + w.(z - x) = 0}, seen from x and from the original image:
        # a step d from a point p lands on it iff w.d + gap + w.(p - x) = 0.
        w = grad.flatten(1)
        flat_x, flat_original = x.flatten(1), original.flatten(1)
        offset_original = gap + (w * (flat_original - flat_x)).sum(1)
        points = torch.cat((flat_x, flat_original))
        steps_to_boundary = project(
            torch.cat((w, w)), torch.cat((gap, offset_original)), -points, 1.0 - points
        )
        to_boundary, original_to_boundary = steps_to_boundary.view(2, *x.shape).unbind(0)
        length = threat.norm(to_boundary).clamp(min=_MIN_STEP)
        original_length = threat.norm(original_to_boundary).clamp(min=_MIN_STEP)
        alpha = (length / (length + original_length)).clamp(0.0, alpha_max).view(view)
        x = (
            (1 - alpha) * (x + eta * to_boundary) + alpha * (original + eta * original_to_boundary)
        ).clamp(0.0, 1.0)
        with torch.no_grad():
            fooled = model(x).argmax(1) != y
        size = threat.norm(x - original)
        closer = fooled & (size < distance[active])
        best[active[closer]], distance[active[closer]] = x[closer], size[closer]
        # Past the boundary: step back towards the image, to look for a closer crossing.
        x = torch.where(fooled.view(view), original + beta * (x - original), x)
        current[active] = x
    return best, distance


@dataclass(frozen=True)
class FABTargeted:
    """FAB-T: FAB towards each of the ``n_target_classes`` runner-up classes, with restarts."""

    eps: float
    norm: str = "Linf"
    steps: int = 100
    n_target_classes: int = 9
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    seed: int = 0
    name: str = "fab_t"

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        images = images.detach()
        closest, distance = self._search(model, images, labels, stop_at=self.eps)
        found = torch.isfinite(distance).view(-1, *([1] * (images.dim() - 1)))
        adversarial = torch.where(found, closest, images)
        # Within eps: the example itself (the projection only guards against float error).
        # Beyond eps: its projection onto the ball, which may still fool (FAB's best point
        # overshoots the boundary by ~0.5%, so a boundary just inside eps is still crossed).
        delta = threat_model(self.norm).project(adversarial - images, self.eps)
        return (images + delta).clamp(0.0, 1.0).detach()

    def minimal(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The closest adversarial example found per sample over every target and restart, and
        its distance in ``norm`` (0 where the image is already misclassified, inf where none)."""
        return self._search(model, images.detach(), labels, stop_at=None)

    def _search(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        stop_at: float | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.norm not in PROJECTIONS:
            raise ValueError(f"FAB-T supports {', '.join(PROJECTIONS)}, not {self.norm!r}")
        generator = make_generator(self.seed, images.device)
        with torch.no_grad():
            logits = model(images)
        n, classes = logits.shape
        ranking = logits.argsort(dim=1, descending=True)
        others = ranking[ranking != labels[:, None]].view(n, classes - 1)
        best = images.clone()
        distance = torch.full((n,), float("inf"), device=images.device, dtype=images.dtype)
        distance[logits.argmax(1) != labels] = 0.0  # already fooled by the image itself
        for index in range(min(self.n_target_classes, classes - 1)):
            for restart in range(self.restarts):
                # Called as an attack, only samples without an adversarial example within eps
                # (early stopping); for ``minimal``, every sample the image does not fool.
                unsolved = distance > 0 if stop_at is None else distance > stop_at
                todo = unsolved.nonzero().squeeze(1)
                if len(todo) == 0:
                    break
                start = images[todo]
                if restart > 0:
                    radius = distance[todo].clamp(max=self.eps) / 2
                    noise = _random_sphere(start.shape, self.norm, generator, images.device)
                    start = start + noise * radius.view(-1, *([1] * (images.dim() - 1)))
                    start = start.clamp(0.0, 1.0)
                found, found_distance = fab_run(
                    model,
                    images[todo],
                    labels[todo],
                    others[todo, index],
                    start,
                    norm=self.norm,
                    steps=self.steps,
                    alpha_max=self.alpha_max,
                    eta=self.eta,
                    beta=self.beta,
                    stop_at=stop_at,
                )
                closer = found_distance < distance[todo]
                best[todo[closer]] = found[closer]
                distance[todo[closer]] = found_distance[closer]
        return best, distance
