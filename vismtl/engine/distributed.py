"""Distributed helpers: start-up under torchrun, rank queries, reductions."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vismtl.config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(launcher: str = "none", share_gpus: bool = False) -> DistInfo:
    """Join the process group started by ``torchrun`` (``launcher="pytorch"``), or run alone.

    NCCL on GPUs, gloo on the CPU. ``share_gpus``: a node's ranks may outnumber its GPUs and
    take them in turn (local rank ``r`` on GPU ``r % count``), for runs whose ranks only meet at
    barriers (whole-slide inference, where one process may not keep a GPU busy); the group is
    then gloo, since NCCL refuses two ranks on one GPU. Without it, more ranks than GPUs is an
    error that says how many to start.
    """
    if launcher == "none":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return DistInfo(0, 1, 0, device)
    if launcher != "pytorch":
        raise ConfigError(f"unknown launcher '{launcher}' (use 'none' or 'pytorch')")
    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR") if k not in os.environ]
    if missing:
        raise ConfigError(
            f"--launcher pytorch needs the environment torchrun sets ({', '.join(missing)} missing); "
            f"start with: torchrun --nproc_per_node=N {sys.argv[0]} ... --launcher pytorch"
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device = torch.device("cuda", _gpu_of(local_rank, torch.cuda.device_count(), share_gpus))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" and not share_gpus else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def _gpu_of(local_rank: int, count: int, shared: bool) -> int:
    """The GPU of a node's ``local_rank``-th process among ``count`` GPUs."""
    if local_rank < count:
        return local_rank
    if shared:
        return local_rank % count
    raise ConfigError(
        f"torchrun started process {local_rank} of this node, which has {count} GPU(s): "
        f"start one process per GPU (--nproc_per_node={count})"
    )


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy; the input is untouched). No-op in a single process."""
    if world_size() == 1:
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank; every rank waits for it, as at a barrier."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
