"""torchrun + DistributedDataParallel helpers (NCCL on GPU, gloo on CPU).

A program calls :func:`setup` once. Without torchrun (no ``WORLD_SIZE`` in the environment) it is a
single process and every helper here degrades to a no-op, so the same code runs both ways.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from utils.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> tuple[torch.device, DistInfo]:
    """Initialise the process group when launched by torchrun; returns this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device, DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank}: only {torch.cuda.device_count()} CUDA devices; "
                            "lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    return device, DistInfo(rank, world, local_rank)


def info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def is_main() -> bool:
    return info().is_main


def barrier() -> None:
    if info().enabled:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op in a single process)."""
    if info().enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of every rank (their lengths may differ), in rank order."""
    if not info().enabled:
        return tensor
    world = dist.get_world_size()
    length = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    dist.all_gather(lengths, length)
    sizes = [int(n.item()) for n in lengths]
    padded = tensor.new_zeros((max(sizes),) + tuple(tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)], dim=0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not info().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def per_rank(global_batch: int, flag: str) -> int:
    """The share of a global batch size that each rank processes (the scripts' batches are global)."""
    world = info().world_size
    if global_batch % world:
        raise UserError(f"{flag} {global_batch}: not divisible by the {world} processes; "
                        "choose a batch size that is a multiple of --nproc_per_node")
    return global_batch // world


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """DDP-wrap ``model`` under torchrun (optionally converting BatchNorm to SyncBatchNorm)."""
    if not info().enabled:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise UserError("--sync-bn: SyncBatchNorm needs CUDA devices; drop the flag for CPU/gloo runs")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                               find_unused_parameters=find_unused_parameters)
