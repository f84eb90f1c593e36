"""The seeds training derives from ``params.yaml``'s ``seed``, by NumPy's ``SeedSequence``.

``SeedSequence`` hashes its whole entropy (the run's seed, then the stage, or the epoch, batch and
rank) into well-mixed state, so two different tuples give independent streams. Sums of the seed
times hand-picked primes did not promise that: two (seed, epoch, batch, rank) tuples could meet
on one number, and the ``train`` stage's ``seed + 1`` was the ``warmup`` stream of the next seed.
"""

from __future__ import annotations

import numpy as np

# The stages a run's seed is derived for (their index is part of the entropy).
STAGES = ("warmup", "train")


def _derived(entropy: list[int]) -> int:
    """A seed of 63 bits from ``entropy`` (non-negative ints): torch's generators take it."""
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def stage_seed(seed: int, stage: str) -> int:
    """The seed of a stage's own random draws (its shuffle, its global torch stream)."""
    return _derived([seed, STAGES.index(stage)])


def batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """The seed of one training step's attack (its random start): every epoch, batch and rank
    its own (0-based epoch and batch; the rank under DDP, 0 alone)."""
    return _derived([seed, epoch, batch, rank])
