"""Multi-process training context: torchrun's process group, this rank's device, and the
all-rank agreement on a flag. One process (``world == 1``) needs no process group."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from diffsep.model import resolve_device


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device
    active: bool  # a process group was initialised here

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, resolve_device(device_name), active=False)
    device = resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    started_here = not dist.is_initialized()
    if started_here:
        dist.init_process_group(backend, timeout=_dt.timedelta(hours=2))
    return Dist(dist.get_rank(), dist.get_world_size(), device, active=started_here)


def any_rank(ctx: Dist, flag: bool) -> bool:
    """True if ``flag`` is set on any rank (so that all ranks take the same branch)."""
    if ctx.world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
