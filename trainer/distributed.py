"""One model on several processes: PyTorch DDP over the process group the caller set up (Ray
Train's TorchTrainer in a sweep, `torch.multiprocessing` in the tests), or a plain single process.

The trainer never starts a process group itself; `Shard.current()` reads the one that is there.
Every rank computes on its rows of the same global batch (`Batches.train(step)` depends on seed
and step only) and DDP averages the gradients, so the update equals one process's on the whole
batch: the global batch and the data of a step do not depend on the number of workers.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import ContextManager

import torch
import torch.distributed as dist

from .config import UserError


@dataclass(frozen=True)
class Shard:
    """This process's place among the `world` processes training one model."""
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Shard":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def writes(self) -> bool:
        """Only rank 0 writes checkpoints and sends reports (the journal, MLflow)."""
        return self.rank == 0

    def rows(self, batch_size: int) -> tuple[int, int]:
        """[start, end) of this rank's rows of a global batch: as equal as they can be."""
        if batch_size < self.world:
            raise UserError(f"batch_size={batch_size} is smaller than the {self.world} workers training one model; "
                            f"every worker needs a row: raise batch_size to at least {self.world} or use fewer workers")
        return batch_size * self.rank // self.world, batch_size * (self.rank + 1) // self.world

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """`value` summed over every rank (itself alone in one process)."""
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value


def micro_batches(start: int, end: int, micro_batch_size: int) -> list[tuple[int, int]]:
    """[start, end) cut into passes of at most `micro_batch_size` rows (0: one pass)."""
    size = micro_batch_size or (end - start)
    return [(a, min(a + size, end)) for a in range(start, end, size)]


def device_of_rank(device: torch.device) -> torch.device:
    """The GPU of this process among the node's (LOCAL_RANK, set by Ray Train and torchrun)."""
    if device.type != "cuda" or "LOCAL_RANK" not in os.environ:
        return device
    index = int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def data_parallel(model: torch.nn.Module, shard: Shard, device: torch.device) -> torch.nn.Module:
    """`model` wrapped in DDP when several ranks train it (gradients averaged in the backward
    pass: gloo on CPU, NCCL on GPU, whichever backend the group has); itself otherwise."""
    if shard.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(forward: torch.nn.Module, last: bool) -> ContextManager:
    """Every pass but a step's last skips DDP's all-reduce: gradients add up locally first."""
    if last or not hasattr(forward, "no_sync"):
        return contextlib.nullcontext()
    return forward.no_sync()
