"""Many processes at inference (``torchrun --nproc_per_node N -m diffsep separate ...``).

Input ``i`` belongs to rank ``i % world``; every rank plans the outputs of all inputs (so name
clashes are found the same way as in one process), separates its own inputs and writes their
files; rank 0 gathers the per-file results into one summary in input order. Each window's noise
depends on the seed and the settings only, so the files are those of a one-process run with the
same seed (rank 0 draws the seed when none is given and shares it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from diffsep.model import resolve_device

if TYPE_CHECKING:
    from diffsep.files import RunSummary


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world`` processes, on ``device``."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether input ``index`` is separated by this process."""
        return index % self.world == self.rank


def join(device_name: str = "auto") -> Ranks:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (gloo on the CPU, NCCL on CUDA,
    one GPU per local rank); otherwise one process on ``device_name``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return Ranks(0, 1, device)
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), device)


def leave(ranks: Ranks) -> None:
    """Leave the process group joined by :func:`join` (nothing for one process)."""
    if ranks.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def shared_seed(ranks: Ranks, seed: int | None) -> int | None:
    """The user's seed, or rank 0's random draw on every rank (None for one process: the run
    draws it)."""
    if ranks.world == 1 or seed is not None:
        return seed
    import torch.distributed as dist

    from diffsep.settings import choose_seed

    box = [choose_seed(None) if ranks.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_summary(ranks: Ranks, summary: RunSummary) -> RunSummary | None:
    """On rank 0: the summary of all inputs, in input order (None on the other ranks).

    ``summary.files`` of each rank holds its own inputs in input order.
    """
    if ranks.world == 1:
        return summary
    import torch.distributed as dist

    parts: list[object] | None = [None] * ranks.world if ranks.is_main else None
    dist.gather_object(list(summary.files), parts, dst=0)
    if not ranks.is_main:
        return None
    assert parts is not None
    per_rank = [list(part) for part in parts]  # type: ignore[call-overload]
    total = sum(len(part) for part in per_rank)
    files = tuple(per_rank[i % ranks.world][i // ranks.world] for i in range(total))
    return replace(summary, files=files, processes=ranks.world)
