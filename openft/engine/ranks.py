"""What the training loop needs to run as one of several torch.distributed processes (ranks).

Each rank trains on its share of every batch; gradients are averaged by DistributedDataParallel;
the figures a step reports (loss, accuracy, tokens) are sums over all ranks; only rank 0 calls
back and writes. With no process group (one process) every helper here is the identity, so a
one-process run computes exactly what it did before ranks existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

StopCode = Literal["cancel", "pause"]
_STOP_CODES: tuple[StopCode | None, ...] = (None, "cancel", "pause")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one that calls back, logs the steps and writes checkpoints and resume states."""
        return self.rank == 0


def current() -> Ranks:
    """This process's place in the initialized process group, or the lone rank of none."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per rank: rank r takes GPU r (of this machine) and makes it the current one, so
    `cuda` (no index) means it in every library call, as it does in a one-process run."""
    if device.type == "cuda" and ranks.world > 1:
        index = ranks.rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return device if device.index is None else torch.device("cuda", index)
    return device


def shard(indices: Sequence[int], ranks: Ranks) -> list[int]:
    """This rank's examples of a batch: every world-th one. The batch is sorted by length, so the
    strided shares pad alike and take about the same time."""
    return list(indices[ranks.rank :: ranks.world])


def all_sum(values: Sequence[float], ranks: Ranks, device: torch.device) -> list[float]:
    """Element-wise sums over the ranks (float64: token counts stay exact)."""
    if ranks.world == 1:
        return list(values)
    # NCCL reduces only GPU tensors; gloo any.
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def agree_on_stop(stop: StopCode | None, ranks: Ranks, device: torch.device) -> StopCode | None:
    """Rank 0's answer to "stop?", broadcast, so that every rank stops before the same step."""
    if ranks.world == 1:
        return stop
    code = torch.tensor([_STOP_CODES.index(stop)], dtype=torch.int64, device=device)
    dist.broadcast(code, src=0)
    return _STOP_CODES[int(code.item())]


def data_parallel(module: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """`module` wrapped so that backward averages the trainable weights' gradients over the ranks
    (and its weights start as rank 0's); unwrapped in a one-process run."""
    if ranks.world == 1:
        return module
    if device.type != "cuda":
        return DistributedDataParallel(module)
    return DistributedDataParallel(module, device_ids=[device.index or torch.cuda.current_device()])
