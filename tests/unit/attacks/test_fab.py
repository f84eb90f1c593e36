"""FAB-T: exact projections, in the ball and deterministic, known answers on linear models, and
about as strong as APGD-T on a natural model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize

from attacks import threat_model
from attacks.apgd import APGDTargeted
from attacks.fab import FABTargeted, project_l2, project_linf
from tests.helpers.models import TinyLinear
from tests.unit.attacks.test_attacks import _closed_form_robust, _linear_problem

# On a linear model FAB's iterates settle into a cycle around the boundary; the closest point
# they visit lies ~0.52% beyond it (eta = 1.05, beta = 0.9, alpha_max = 0.1).
FAB_OVERSHOOT = 0.01


def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


@pytest.mark.parametrize(("norm", "eps"), [("Linf", 0.1), ("L2", 0.5)])
def test_fab_t_stays_in_the_ball_fools_and_is_deterministic(
    norm: str, eps: float, trained_digits_model
) -> None:
    model, images, labels = trained_digits_model
    images, labels = images[:100], labels[:100]
    # Two restarts: the second starts from random points, drawn from the seeded generator.
    attack = FABTargeted(eps=eps, norm=norm, steps=20, n_target_classes=3, restarts=2)
    adversarial = attack(model, images, labels)
    assert adversarial.shape == images.shape
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert threat_model(norm).norm(adversarial - images).max() <= eps * (1 + 1e-5)
    assert _accuracy(model, adversarial, labels) < _accuracy(model, images, labels)
    assert torch.equal(adversarial, attack(model, images, labels))


def _random_problem(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """w, a point x in [0, 1]^D (some coordinates on the faces) and its box lo = -x, hi = 1 - x,
    and b such that the hyperplane w.d + b = 0 meets the box at a random point of it."""
    dims = int(rng.integers(1, 9))
    w = rng.normal(size=dims) * (rng.random(dims) > 0.2)  # some zero weights
    w[rng.integers(dims)] = rng.normal()  # but not all
    x = rng.random(dims)
    x[rng.random(dims) < 0.2] = rng.choice([0.0, 1.0])
    lo, hi = -x, 1 - x
    b = -(w @ (lo + (hi - lo) * rng.random(dims)))
    return w, b, lo, hi


def _torch_rows(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(np.atleast_1d(array), dtype=torch.float64)[None] for array in arrays]


def _project(projection, w, b, lo, hi) -> np.ndarray:
    tw, tb, tlo, thi = _torch_rows(w, b, lo, hi)
    return projection(tw, tb.view(1), tlo, thi)[0].numpy()


def test_linf_projection_matches_a_linear_program() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        w, b, lo, hi = _random_problem(rng)
        d = _project(project_linf, w, b, lo, hi)
        assert abs(w @ d + b) < 1e-9
        assert np.all(d >= lo - 1e-12) and np.all(d <= hi + 1e-12)
        # min t over (d, t) subject to -t <= d_i <= t, lo <= d <= hi, w.d = -b
        dims = len(w)
        bound = np.block(
            [[np.eye(dims), -np.ones((dims, 1))], [-np.eye(dims), -np.ones((dims, 1))]]
        )
        reference = linprog(
            np.r_[np.zeros(dims), 1.0],
            A_ub=bound,
            b_ub=np.zeros(2 * dims),
            A_eq=np.r_[w, 0.0][None],
            b_eq=[-b],
            bounds=[*zip(lo, hi, strict=True), (0, None)],
            method="highs",
        )
        assert reference.status == 0
        assert np.abs(d).max() == pytest.approx(reference.x[-1], abs=1e-7)


def _hyperplane(z: np.ndarray, w: np.ndarray, b: float) -> float:
    return w @ z + b


def _normal(z: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return w


def test_l2_projection_matches_a_constrained_solver() -> None:
    rng = np.random.default_rng(1)
    for _ in range(40):
        w, b, lo, hi = _random_problem(rng)
        d = _project(project_l2, w, b, lo, hi)
        assert abs(w @ d + b) < 1e-9
        assert np.all(d >= lo - 1e-12) and np.all(d <= hi + 1e-12)
        reference = minimize(
            lambda z: z @ z,
            np.zeros_like(w),
            jac=lambda z: 2 * z,
            method="SLSQP",
            constraints=[{"type": "eq", "fun": _hyperplane, "jac": _normal, "args": (w, b)}],
            bounds=list(zip(lo, hi, strict=True)),
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert reference.success
        assert np.linalg.norm(d) == pytest.approx(np.linalg.norm(reference.x), abs=1e-4)


@pytest.mark.parametrize("projection", [project_linf, project_l2], ids=["Linf", "L2"])
def test_projection_goes_to_the_closest_corner_when_the_hyperplane_misses_the_box(
    projection,
) -> None:
    # w.d + b = 0 needs w.d = -3, but the box allows w.d >= -(0.4 + 2 * 0.7) = -1.8: every
    # coordinate goes to the face that lowers w.d; the zero-weight one stays put.
    w, b = np.array([1.0, -2.0, 0.0]), 3.0
    lo, hi = np.array([-0.4, -0.2, -0.5]), np.array([0.6, 0.7, 0.5])
    assert np.allclose(_project(projection, w, b, lo, hi), [-0.4, 0.7, 0.0])
    # The same with the sign of the hyperplane flipped: the opposite faces.
    assert np.allclose(_project(projection, -w, -b, lo, hi), [-0.4, 0.7, 0.0])
    assert np.allclose(_project(projection, w, -3.0, lo, hi), [0.6, -0.2, 0.0])


def test_projection_of_a_point_on_the_hyperplane_is_zero() -> None:
    w, lo, hi = np.array([1.0, -2.0]), np.array([-0.5, -0.5]), np.array([0.5, 0.5])
    for projection in (project_linf, project_l2):
        assert np.array_equal(_project(projection, w, 0.0, lo, hi), [0.0, 0.0])
        assert np.array_equal(_project(projection, np.zeros(2), 0.0, lo, hi), [0.0, 0.0])


def test_fab_t_reaches_the_known_answer_on_a_multiclass_linear_model() -> None:
    model, images, labels = _linear_problem(classes=5, seed=1)
    expected = _closed_form_robust(model, images, labels, 0.1)
    assert 0.1 < expected.float().mean() < 0.9
    attack = FABTargeted(eps=0.1, steps=20, n_target_classes=4)
    with torch.no_grad():
        survived = model(attack(model, images, labels)).argmax(1) == labels
    assert torch.equal(survived, expected)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_fab_t_finds_the_minimal_distance_of_a_binary_linear_model(norm: str) -> None:
    # The smallest perturbation that flips a binary linear classifier is margin / ||w_y - w_o||
    # in the dual norm: L1 for Linf, L2 for L2. No attack can go below it.
    model, images, labels = _linear_problem(classes=2)
    weight = model.linear.weight
    difference = weight[labels] - weight[1 - labels]
    dual = difference.abs().sum(1) if norm == "Linf" else difference.norm(dim=1)
    closed_form = (difference * images.flatten(1)).sum(1) / dual
    reachable = closed_form < 0.25  # from [0.3, 0.7], the boundary lies inside [0, 1]
    assert reachable.float().mean() > 0.5
    attack = FABTargeted(eps=0.1, norm=norm, steps=20, n_target_classes=1)
    closest, distance = attack.minimal(model, images, labels)
    relative = (distance[reachable] - closed_form[reachable]) / closed_form[reachable]
    assert torch.isfinite(distance[reachable]).all()
    assert relative.min() >= -1e-4  # never below the true minimum
    assert relative.max() <= FAB_OVERSHOOT
    # What minimal returns fools the model, at the distance it reports.
    found = torch.isfinite(distance)
    assert torch.allclose(threat_model(norm).norm(closest - images)[found], distance[found])
    with torch.no_grad():
        assert (model(closest[found]).argmax(1) != labels[found]).all()


class _CountingLinear(TinyLinear):
    """Counts forward and backward passes through its logits."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__(weight, bias)
        self.backward_passes = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = super().forward(images)
        if logits.requires_grad:
            logits.register_hook(self._count)
        return logits

    def _count(self, grad: torch.Tensor) -> None:
        self.backward_passes += 1


def test_fab_t_takes_one_backward_pass_per_step_and_leaves_the_model_alone() -> None:
    model, images, labels = _linear_problem(classes=5, seed=1)
    counting = _CountingLinear(model.linear.weight.detach(), model.linear.bias.detach()).train()
    FABTargeted(eps=0.1, steps=7, n_target_classes=2).minimal(counting, images, labels)
    assert counting.backward_passes == 2 * 7  # one per step and target, not one per class
    assert counting.training  # the mode is the caller's
    assert all(parameter.grad is None for parameter in counting.parameters())


def test_fab_t_returns_misclassified_images_unchanged(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    with torch.no_grad():
        wrong = model(images).argmax(1) != labels
    assert wrong.any()
    attack = FABTargeted(eps=0.1, steps=5, n_target_classes=1)
    assert torch.equal(attack(model, images, labels)[wrong], images[wrong])
    closest, distance = attack.minimal(model, images, labels)
    assert torch.equal(closest[wrong], images[wrong]) and (distance[wrong] == 0).all()


def test_fab_t_refuses_an_unknown_norm() -> None:
    model, images, labels = _linear_problem(classes=2)
    with pytest.raises(ValueError, match="L1"):
        FABTargeted(eps=1.0, norm="L1")(model, images, labels)


def test_fab_t_is_about_as_strong_as_apgd_t(trained_digits_model) -> None:
    model, images, labels = trained_digits_model
    eps = 0.05
    fab = FABTargeted(eps=eps, steps=30, n_target_classes=3)(model, images, labels)
    apgd = APGDTargeted(eps=eps, steps=100, n_target_classes=3)(model, images, labels)
    fab_accuracy, apgd_accuracy = _accuracy(model, fab, labels), _accuracy(model, apgd, labels)
    assert fab_accuracy < _accuracy(model, images, labels)
    assert fab_accuracy <= apgd_accuracy + 0.03
