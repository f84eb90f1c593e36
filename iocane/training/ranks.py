"""This process's place among the data-parallel training processes, and the collectives the
training loop needs from it.

``Ranks()`` is one process alone: every method then returns its input, so the loop reads the
same with and without DDP. Under ``torchrun`` (``iocane.training.launcher``) each process is a
rank of ``world_size``; it trains on its shard of every global batch, only rank 0 writes, and
the sums, the first non-finite step and a stop request are agreed over all ranks.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist

from iocane.base.interrupts import stop_requested
from iocane.base.settings import settings


class DistributedTrainingFailed(RuntimeError):
    """A rank failed for a reason iocane has no class for; the message names the rank."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes; ``Ranks()`` is one process alone."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes files: only rank 0 does."""
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch; the sizes differ by at most one."""
        if not self.distributed:
            return index
        return index.tensor_split(self.world_size)[self.rank]

    def sum(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each tensor added up over the ranks (one collective for all of them)."""
        if not self.distributed or not tensors:
            return tensors
        keys = sorted(tensors)
        flat = torch.stack([tensors[key].double().reshape(()) for key in keys])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        return {
            key: flat[i].to(tensors[key].dtype).reshape(tensors[key].shape)
            for i, key in enumerate(keys)
        }

    def first_step(self, step: torch.Tensor) -> torch.Tensor:
        """The smallest non-negative step over the ranks, -1 when every rank has -1."""
        if not self.distributed:
            return step
        big = torch.iinfo(torch.long).max
        value = torch.where(step < 0, big, step).reshape(1).clone()
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return torch.where(value[0] == big, -1, value[0])

    def smallest(self, value: int, device: torch.device) -> int:
        """The smallest of each rank's ``value``, the same answer on every rank."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.long, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return int(tensor.item())

    def agreed_stop(self, device: torch.device) -> str | None:
        """The signal that asked any rank to stop, the same answer on every rank. Under DDP
        this is a collective after every step (a host sync on CUDA): without it one rank could
        stop while the others wait for it in the next step's gradient exchange."""
        requested = stop_requested()
        if not self.distributed:
            return requested
        code = torch.tensor([int(signal.Signals[requested]) if requested else 0], device=device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        number = int(code.item())
        return signal.Signals(number).name if number else None

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def ranks_from_environment() -> Ranks:
    """What torchrun told this process (one process alone without it)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Ranks()
    return Ranks(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def rank_device(ranks: Ranks) -> torch.device:
    """One GPU per rank on CUDA (``IOCANE_DEVICE`` still overrides), else the CPU."""
    name = settings().device
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        if ranks.local_rank >= torch.cuda.device_count():
            raise DistributedTrainingFailed(
                f"train.nproc asks for rank {ranks.local_rank} on this machine, which has "
                f"{torch.cuda.device_count()} GPU(s); set train.nproc to at most that"
            )
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    return torch.device("cpu")
