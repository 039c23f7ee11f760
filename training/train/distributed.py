"""``torchrun`` DistributedDataParallel: the process group and the few collectives the loop
needs (NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> Dist:
    """Join the ``torchrun`` process group when launched by it (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_mean(value: torch.Tensor, d: Dist) -> torch.Tensor:
    if not d.enabled:
        return value.detach()
    import torch.distributed as dist

    out = value.detach().clone()
    dist.all_reduce(out)
    return out / d.world
