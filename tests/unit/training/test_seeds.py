"""The seeds training derives (``iocane.training.seeds``): reproducible, each step, epoch, rank,
run seed and stage its own, and taken by torch's generators."""

from __future__ import annotations

import itertools

import torch

from iocane.training.seeds import STAGES, batch_seed, stage_seed


def test_every_step_of_every_run_gets_its_own_seed_and_the_same_one_again() -> None:
    grid = list(itertools.product(range(3), range(12), range(300), range(3)))
    seeds = [batch_seed(*key) for key in grid]
    assert len(set(seeds)) == len(grid), "two (seed, epoch, batch, rank) share a seed"
    assert seeds[:50] == [batch_seed(*key) for key in grid[:50]]
    # The hand-picked primes met here: batch 10,007 of epoch 0 was batch 0 of epoch 1.
    assert batch_seed(0, 0, 10_007, 0) != batch_seed(0, 1, 0, 0)


def test_stage_seeds_differ_by_stage_and_run_and_fit_torch() -> None:
    seeds = {(seed, stage): stage_seed(seed, stage) for seed in range(50) for stage in STAGES}
    assert len(set(seeds.values())) == len(seeds)
    for value in [*seeds.values(), batch_seed(7, 3, 2, 1)]:
        assert 0 <= value < 2**63
        torch.Generator().manual_seed(value)
