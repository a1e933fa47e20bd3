"""torchrun + DistributedDataParallel helpers (NCCL on GPU, gloo on CPU).

A program calls :func:`setup` once. Without torchrun (no ``WORLD_SIZE`` in the environment) it is a
single process and every helper here degrades to a no-op, so the same code runs both ways.
Evaluation and labelling read this rank's share of a dataset through :func:`eval_loader`; the
training batches and the per-step collectives are :mod:`utils.trainer`'s and :mod:`utils.losses`'.
"""
from __future__ import annotations

import datetime
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.cli import launch_rank, launch_world_size
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
    world = launch_world_size()
    if world <= 1:
        return device, DistInfo()
    rank = launch_rank()
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
    """Concatenate along dim 0 the tensors of every rank (their lengths may differ), in rank order.
    The lengths are gathered first; the gather itself is :func:`utils.trainer.gather_shares`, the
    one the training steps call with lengths they already know."""
    if not info().enabled:
        return tensor
    from utils.trainer import gather_shares  # here: utils.trainer imports this module (through utils.cost)

    length = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    lengths = [torch.zeros_like(length) for _ in range(dist.get_world_size())]
    dist.all_gather(lengths, length)
    return gather_shares(tensor, [int(n.item()) for n in lengths])


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process)."""
    if not info().enabled:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s (no-op in a single process)."""
    if info().enabled:
        dist.broadcast(tensor, src=src)
    return tensor


def broadcast_buffers_(module: nn.Module, src: int = 0) -> None:
    """Every buffer of ``module`` (BatchNorm statistics) set to rank ``src``'s (no-op in one process)."""
    if info().enabled:
        for buf in module.buffers():
            dist.broadcast(buf.data, src=src)


def per_rank(global_batch: int, flag: str = "") -> int:
    """A rank's batch size for sharded inference (labelling, ``flag`` the batch flag): ⌈global /
    world⌉, any world size. Only throughput depends on it: every image is processed on its own
    (eval mode). Training batches are split by :func:`utils.trainer.rank_share` instead."""
    return max(1, math.ceil(global_batch / info().world_size))


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool | None = False) -> nn.Module:
    """DDP-wrap ``model`` under torchrun, converting BatchNorm to SyncBatchNorm when ``sync_bn``.

    ``sync_bn=None`` (segmentation's default) means: SyncBatchNorm on CUDA, whose BN then sees the
    statistics of the whole global batch as in one process; on CPU/gloo, where SyncBatchNorm cannot
    run, plain BatchNorm per process (one line on stderr says so)."""
    if not info().enabled:
        return model
    if sync_bn is None:
        sync_bn = device.type == "cuda"
        if not sync_bn and info().is_main:
            print("note: SyncBatchNorm needs CUDA; on CPU each process's BatchNorm uses the statistics of its "
                  "own share of the batch", file=sys.stderr, flush=True)
    if sync_bn:
        if device.type != "cuda":
            raise UserError("--sync-bn: SyncBatchNorm needs CUDA devices; use --no-sync-bn for CPU/gloo runs")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


class ShardSampler(Sampler):
    """This rank's share of ``range(size)`` for evaluation and labelling: every ``world``-th index
    from ``rank``, in order, **without** padding (unlike training), so that no sample is counted
    twice when the ranks' results are summed or pooled."""

    def __init__(self, size: int) -> None:
        d = info()
        self.indices = list(range(d.rank, size, d.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def eval_loader(dataset: Dataset, batch_size: int, collate_fn: Callable | None = None,
                **loader_kwargs: Any) -> DataLoader:
    """A loader over this rank's :class:`ShardSampler` share of ``dataset``, in order, no drop_last."""
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset)),  # type: ignore[arg-type]
                      drop_last=False, collate_fn=collate_fn, **loader_kwargs)
