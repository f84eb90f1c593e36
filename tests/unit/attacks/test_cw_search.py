"""The C&W constant search: it widens c past a too-small start, stops at its ceiling, and reports
``inf`` only for the samples it could not fool with c up to that ceiling."""

from __future__ import annotations

import math

import torch

from attacks.cw import MAX_CONST, TIGHTENING_ROUNDS, CarliniWagnerL2
from tests.helpers.models import TinyLinear


def _faint_linear_problem(scale: float):
    """A binary linear classifier whose logits are scaled by ``scale``, and images whose
    smallest fooling perturbation (the distance to the hyperplane, the same at any scale) is
    between 0.1 and 0.25, reachable inside [0, 1]: a small scale needs a large c to find it."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 4, generator=generator) * scale
    model = TinyLinear(weight, torch.zeros(2))
    images = 0.3 + 0.4 * torch.rand(400, 1, 2, 2, generator=generator)
    with torch.no_grad():
        labels = model(images).argmax(1)
    difference = weight[labels] - weight[1 - labels]
    closed_form = (difference * images.flatten(1)).sum(1) / difference.norm(dim=1)
    keep = ((closed_form > 0.1) & (closed_form < 0.25)).nonzero()[:30, 0]
    assert len(keep) == 30
    return model, images[keep], labels[keep], closed_form[keep]


def test_the_old_five_rounds_miss_what_widening_finds() -> None:
    # At scale 1e-5 the margin term matters only for c of 1e5 and more: a ceiling of 1e3 (as far
    # as the five rounds from 0.1 went before the search widened) finds nothing, 1e6 finds all.
    model, images, labels, closed_form = _faint_linear_problem(scale=1e-5)
    short = CarliniWagnerL2(eps=0.0, steps=100, search_steps=5, max_const=1e3)
    _, missed = short.minimal(model, images, labels)
    assert torch.isinf(missed).all()
    _, distance = CarliniWagnerL2(eps=0.0, steps=100, search_steps=5).minimal(model, images, labels)
    assert torch.isfinite(distance).all()
    relative = (distance - closed_form) / closed_form
    assert relative.min() >= -1e-3  # never below the true minimum
    assert relative.median() < 0.2  # tightened after it was found


def test_points_beyond_reach_are_not_found_and_stop_at_the_bound() -> None:
    # A bias no perturbation inside [0, 1] can overcome: class 0 wherever C&W looks.
    model = TinyLinear(torch.tensor([[0.0] * 4, [1.0] * 4]), torch.tensor([10.0, 0.0]))
    images = torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(6, dtype=torch.int64)
    attack = CarliniWagnerL2(eps=0.0, steps=20)
    best, distance = attack.minimal(model, images, labels)
    assert torch.isinf(distance).all()
    assert torch.equal(best, images)  # nothing found: the images themselves


def test_the_rounds_are_bounded_and_only_unfound_points_pay_for_the_extra_ones() -> None:
    attack = CarliniWagnerL2(eps=0.0, search_steps=5)
    widenings = math.ceil(math.log10(MAX_CONST / attack.initial_const))
    assert attack.max_rounds == widenings + 1 + TIGHTENING_ROUNDS == 10
    assert CarliniWagnerL2(eps=0.0, search_steps=9).max_rounds == 12  # one round at 10x lr

    class Counting(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.rows = inner, 0

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            self.rows += len(images)
            return self.inner(images)

    # A problem found in the first rounds costs what the five rounds always cost.
    model, images, labels, _ = _faint_linear_problem(scale=100.0)
    counting = Counting(model)
    _, distance = CarliniWagnerL2(eps=0.0, steps=50).minimal(counting, images, labels)
    assert torch.isfinite(distance).all()
    assert counting.rows == 5 * 50 * len(images)
    # Points out of reach stop paying: with a ceiling of 10, three rounds widen c to it, they
    # wait out the other two first rounds and fail once more at the extra rounds' learning rate.
    counting = Counting(TinyLinear(torch.tensor([[0.0] * 4, [1.0] * 4]), torch.tensor([10.0, 0])))
    labels = torch.zeros(len(images), dtype=torch.int64)
    CarliniWagnerL2(eps=0.0, steps=50, max_const=10.0).minimal(counting, images, labels)
    assert counting.rows == 4 * 50 * len(images)


def test_pixels_at_0_and_1_move_in_the_extra_rounds(trained_digits_model, monkeypatch) -> None:
    # Digits are mostly pixels at exactly 0 or 1, where the tanh change of variables saturates:
    # at the first rounds' learning rate they never move, whatever c. Every point APGD-L2
    # breaks within L2 2 must get a finite distance, at most about APGD's.
    import attacks.cw as cw_module
    from attacks.apgd import APGD

    model, images, labels = trained_digits_model
    images, labels = images[:80], labels[:80]
    with torch.no_grad():
        correct = model(images).argmax(1) == labels
    images, labels = images[correct], labels[correct]
    adversarial = APGD(eps=2.0, norm="L2", steps=50, seed=0)(model, images, labels)
    with torch.no_grad():
        broken = model(adversarial).argmax(1) != labels
    assert broken.float().mean() > 0.9
    attack = CarliniWagnerL2(eps=0.0)
    _, distance = attack.minimal(model, images[broken], labels[broken])
    assert torch.isfinite(distance).all()
    assert distance.max() <= 2.0 * 1.5
    monkeypatch.setattr(cw_module, "EXTRA_LR_FACTOR", 1.0)  # the widening of c alone
    _, without = attack.minimal(model, images[broken], labels[broken])
    assert torch.isinf(without).any()  # the case this test is about is in the sample
