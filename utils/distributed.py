"""torchrun + DistributedDataParallel helpers (NCCL on GPU, gloo on CPU).

A program calls :func:`setup` once. Without torchrun (no ``WORLD_SIZE`` in the environment) it is a
single process and every helper here degrades to a no-op, so the same code runs both ways.
"""
from __future__ import annotations

import datetime
import math
import os
import sys
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


def all_gather_cat(tensor: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of every rank (their lengths may differ), in rank order.

    ``sizes``: every rank's length when the caller knows them (the training steps do: they follow
    from the global batch), which saves a collective and a device→host read."""
    if not info().enabled:
        return tensor
    world = dist.get_world_size()
    if sizes is None:
        length = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
        lengths = [torch.zeros_like(length) for _ in range(world)]
        dist.all_gather(lengths, length)
        sizes = [int(n.item()) for n in lengths]
    padded = tensor.new_zeros((max(sizes),) + tuple(tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)], dim=0)


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


def rank_share(global_size: int, rank: int | None = None, world: int | None = None) -> tuple[int, int]:
    """``(start, stop)`` of this rank's contiguous share of a global batch of ``global_size``
    samples: sizes differ by at most one, the first ``global_size % world`` ranks take one more
    (e.g. 8 over 3 ranks: 3, 3, 2; 2 over 4 ranks: 1, 1, 0, 0). Rank order is batch order, so
    gathering the shares in rank order gives the global batch back."""
    d = info()
    rank = d.rank if rank is None else rank
    world = d.world_size if world is None else world
    base, extra = divmod(global_size, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def mean_denominator(local_count: torch.Tensor) -> torch.Tensor:
    """The M of a mean Σ/M over the **whole global batch**, for a loss whose gradients DDP averages.

    Single process: ``local_count`` (clamped to ≥ 1) as a float. Under torchrun: the count summed
    over the ranks (an all_reduce on the device, no host sync), divided by the world size, so that
    each rank's Σ_rank/M·world averaged by DDP is Σ_all/M: one process's gradient on the same
    global batch (docs/method.md §3.1)."""
    if not info().enabled:
        return local_count.clamp_min(1).float()
    total = local_count.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.clamp_min(1).float() / dist.get_world_size()


def sum_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors (0-d or 1-d, e.g. a histogram's counts) summed over the ranks in one all_reduce (as
    they are in a single process)."""
    if not info().enabled or not values:
        return values
    keys = list(values)
    flat = [values[k].detach().float().reshape(-1) for k in keys]
    packed = torch.cat(flat)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    parts = packed.split([f.numel() for f in flat])
    return {k: part.reshape(values[k].shape) for k, part in zip(keys, parts)}


def average_bn_statistics_(module: nn.Module, local_size: int) -> None:
    """Make every rank's BatchNorm running statistics the average of the ranks', weighted by the
    number of samples ``local_size`` each rank's last forward saw (one all_reduce, on the device).

    Without it, a forward updates each rank's running mean/var with its own share of the batch and
    DDP broadcasts rank 0's buffers at the next forward: the updates of ranks ≥ 1 are lost
    (classification's no-grad weights forward runs outside DDP, docs/method.md §3.3), the ranks
    evaluate and average different models, and a resumed run (rank 0's buffers) differs from an
    uninterrupted one. Called after every training forward, it keeps every rank's share: the
    running mean becomes the whole batch's, the running variance the shares' average, and every
    rank holds what rank 0 saves. No-op in a single process and for SyncBatchNorm (whose statistics
    are already the global batch's)."""
    if not info().enabled:
        return
    # only BN layers in training mode update their statistics (and only they need this); their
    # backward does not read the running statistics, so they are rewritten through ``.data``
    # (no autograd version bump) between the forward and the backward
    buffers = [t for m in module.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
               and m.training and m.track_running_stats and m.running_mean is not None
               for t in (m.running_mean, m.running_var)]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).float() for b in buffers] +
                     [torch.ones(1, device=buffers[0].device)]) * float(local_size)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = flat[:-1] / flat[-1].clamp_min(1)
    offset = 0
    for b in buffers:
        b.data.copy_(flat[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


def broadcast_buffers_(module: nn.Module, src: int = 0) -> None:
    """Every buffer of ``module`` (BatchNorm statistics) set to rank ``src``'s (no-op in one process)."""
    if info().enabled:
        for buf in module.buffers():
            dist.broadcast(buf.data, src=src)


def per_rank(global_batch: int, flag: str = "") -> int:
    """A rank's batch size for sharded inference (labelling, ``flag`` the batch flag): ⌈global /
    world⌉, any world size. Only throughput depends on it: every image is processed on its own
    (eval mode). Training batches are split by :func:`rank_share` instead."""
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
