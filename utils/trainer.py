"""The training loop shared by segmentation and classification, and the batches it draws.

* **Batches** (:func:`step_batches`, :func:`paired_batches`): step ``s``'s global batch is the same
  whatever the number of DataLoader workers, resumes and torchrun processes (which split it,
  :func:`rank_share`); each sample is seeded from ``(run seed, epoch, index)`` (:class:`SeededDataset`).
* **The step**: the caller's ``step_fn`` (forward + loss; BN statistics averaged over the ranks by
  :func:`average_bn_statistics_`), then :func:`backward_step` (fp16: through the GradScaler).
* **The loop** (:class:`Trainer`): LR per iteration, optional EMA, statistics read back only at
  logging intervals (0-d: averaged, ``train/<name>``; 1-D: bin counts over [0, 1], a histogram),
  validation after step ``s`` when ``s % val_every == val_every - 1`` or ``s == total_steps - 1``
  (docs/method.md §8), a best snapshot on a strictly better metric (``>=`` with ``snapshot_on_equal``),
  resume checkpoints, and a final evaluation that is reported but does not compete for the snapshot.
"""
from __future__ import annotations

import math
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from utils.checkpoint import load_training_state, save_checkpoint, save_training_state
from utils.cost import CostMeter
from utils.errors import UserError
from utils.run_log import RunLogger, progress

StepFn = Callable[[Any, int], tuple[torch.Tensor, Mapping[str, torch.Tensor], int]]
EvalFn = Callable[[], Mapping[str, float]]


# ---------------------------------------------------------------------------------- batches
def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process (``(0, 1)`` without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_share(global_size: int, rank: int | None = None, world: int | None = None) -> tuple[int, int]:
    """``(start, stop)`` of this rank's contiguous share of a global batch of ``global_size`` samples, in
    rank order; the first ``global_size % world`` ranks take one more (8 over 3: 3, 3, 2; 2 over 4: 1, 1, 0, 0)."""
    if rank is None or world is None:
        this_rank, this_world = rank_world()
        rank = this_rank if rank is None else rank
        world = this_world if world is None else world
    base, extra = divmod(global_size, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_shares(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Every rank's rows of ``x`` (``sizes``: each rank's count, e.g. from :func:`rank_share`)
    concatenated in rank order: one all_gather on the device, padded to the largest share."""
    padded = x.new_zeros((max(sizes),) + tuple(x.shape[1:]))
    padded[: x.shape[0]] = x
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([g[:n] for g, n in zip(gathered, sizes)], dim=0)


def _mix(*values: int) -> int:
    """A 63-bit seed from a few integers (splitmix-style, stable across runs and platforms)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class SeededDataset(Dataset):
    """``ds[(index, seed)]`` runs ``base[index]`` with Python's, numpy's and torch's CPU RNGs seeded
    from ``seed`` and restored afterwards (so ``workers=0`` does not disturb the training RNGs)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % (2**32))
            torch.manual_seed(seed)
            try:
                return self.base[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        """A batch at once: ``base.getitems_seeded(keys)`` where the base has it (its items depend on
        each seed alone; no RNG is re-seeded: ~0.4 ms an item saved), else ``[self[key] ...]``."""
        fetch = getattr(self.base, "getitems_seeded", None)
        return [self[key] for key in keys] if fetch is None else fetch(keys)


def epoch_order(size: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The order of ``range(size)`` in ``epoch``: a permutation drawn from ``(seed, epoch)``."""
    if not shuffle:
        return list(range(size))
    return torch.randperm(size, generator=torch.Generator().manual_seed(_mix(seed, epoch))).tolist()


class GlobalBatches:
    """The global batches of one dataset: batch ``b`` is ``[(index, sample_seed), ...]``, batch
    ``b % per_epoch`` of epoch ``b // per_epoch``, which visits ``epoch_order(size, seed, epoch)`` in
    batches of ``batch_size`` (the last one smaller, no drop_last, as in the original). The
    processes split a batch (:func:`rank_share`), they don't shard the dataset."""

    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        if size < 1:
            raise UserError("a training list holds no sample; check the split file")
        self.num_samples, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.per_epoch = math.ceil(size / batch_size)
        self._cached: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return self.per_epoch

    def size(self, number: int) -> int:
        """The number of samples in global batch ``number`` (no data touched)."""
        b = number % self.per_epoch
        return min(self.batch_size, self.num_samples - b * self.batch_size)

    def __call__(self, number: int) -> list[tuple[int, int]]:
        epoch, b = divmod(number, self.per_epoch)
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, epoch_order(self.num_samples, self.seed, epoch, self.shuffle))
        order = self._cached[1][b * self.batch_size:(b + 1) * self.batch_size]
        return [(index, _mix(self.seed, epoch, index, 1)) for index in order]


class StepSampler(Sampler):
    """Batch sampler over steps ``start, start + 1, ...``: this rank's contiguous share (possibly
    empty) of the concatenated global batches of the parts, ``[(part, index, sample_seed), ...]``."""

    def __init__(self, parts: Sequence[GlobalBatches], start: int = 0) -> None:
        self.parts, self.start = list(parts), start

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        step = self.start
        while True:
            batch = [(k, index, seed) for k, part in enumerate(self.parts) for index, seed in part(step)]
            lo, hi = rank_share(len(batch))
            yield batch[lo:hi]
            step += 1


class StepDataset(Dataset):
    """``ds[(part, index, seed)]`` = ``(part, datasets[part][index])``, seeded (:class:`SeededDataset`)."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = [SeededDataset(d) for d in datasets]

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[int, Any]:
        part, index, seed = key
        return part, self.datasets[part][(index, seed)]

    def __getitems__(self, keys: list[tuple[int, int, int]]) -> list[tuple[int, Any]]:
        """A batch, each part's keys through its :meth:`SeededDataset.__getitems__`, in batch order."""
        out: list[Any] = [None] * len(keys)
        positions: dict[int, list[int]] = {}
        for i, (part, _, _) in enumerate(keys):
            positions.setdefault(part, []).append(i)
        for part, where in positions.items():
            items = self.datasets[part].__getitems__([keys[i][1:] for i in where])
            for i, item in zip(where, items):
                out[i] = (part, item)
        return out


class _PartsCollate:
    """``(collate_0(items of part 0), collate_1(...), ...)`` (one part: its batch); lists may be empty."""

    def __init__(self, collates: Sequence[Callable]) -> None:
        self.collates = list(collates)

    def __call__(self, items: list[tuple[int, Any]]) -> Any:
        out = tuple(fn([item for k, item in items if k == part]) for part, fn in enumerate(self.collates))
        return out[0] if len(out) == 1 else out


class EpochStream:
    """A dataset's training batches (:class:`GlobalBatches` of the **global** ``batch_size``);
    ``len(stream)``: batches per epoch; ``iterate(start)``: this rank's collated share of global
    batches ``start, start + 1, ...`` forever. ``collate_fn`` gets this rank's (possibly empty)
    list of items; None is torch's default collate."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, shuffle: bool = True,
                 collate_fn: Callable | None = None, **loader_kwargs: Any) -> None:
        self.dataset = dataset
        self.batches = GlobalBatches(len(dataset), batch_size, seed, shuffle)  # type: ignore[arg-type]
        self.batch_size, self.seed = batch_size, seed
        self.collate_fn = collate_fn if collate_fn is not None else default_collate
        self.loader_kwargs = loader_kwargs

    def __len__(self) -> int:
        return self.batches.per_epoch

    def iterate(self, start: int = 0) -> Iterator[Any]:
        return step_batches([self], start)


def step_batches(streams: Sequence[EpochStream], start: int = 0) -> Iterator[Any]:
    """This rank's share of the concatenated global batches of ``streams`` from step ``start``, by one
    DataLoader (the first stream's settings) that loads exactly this rank's items."""
    first = streams[0]
    # a private generator: a worker base seed drawn from the global RNG would make training depend on resumes
    loader = DataLoader(StepDataset([s.dataset for s in streams]),
                        batch_sampler=StepSampler([s.batches for s in streams], start),
                        collate_fn=_PartsCollate([s.collate_fn for s in streams]),
                        generator=torch.Generator().manual_seed(_mix(first.seed, 2)), **first.loader_kwargs)
    return iter(loader)


def paired_batches(primary: EpochStream, secondary: EpochStream, start: int = 0) -> Iterator[tuple[Any, Any]]:
    """DMT's pairs: global batch ``s`` of the primary (pseudo) stream, which defines the epoch, and
    of the secondary (labelled) one, which restarts when exhausted; the processes split the
    concatenated batch. Yields this rank's ``(primary part, secondary part)`` (either may be empty)."""
    return step_batches([primary, secondary], start)


# ---------------------------------------------------------------------------------- the step
def to_device(x: torch.Tensor, device: torch.device, memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """A (pinned) host batch to the device without blocking, in ``memory_format`` if given."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=memory_format) if memory_format is not None else x


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> bool:
    """backward + optimizer step; returns whether ``optimizer.step()`` ran. With an enabled (fp16) GradScaler,
    which skips the step on inf/NaN gradients, an optimizer post-step hook tells, at no extra host sync."""
    if not scaler.is_enabled():
        loss.backward()
        optimizer.step()
        return True
    ran: list[bool] = []
    handle = optimizer.register_step_post_hook(lambda *_: ran.append(True))
    try:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
    finally:
        handle.remove()
    scaler.update()
    return bool(ran)


def average_bn_statistics_(module: nn.Module, local_size: int) -> None:
    """Make every rank's BatchNorm running statistics the average of the ranks', weighted by the
    number of samples ``local_size`` each rank's last forward saw (one all_reduce, on the device).

    Called after every training forward (DDP would otherwise broadcast rank 0's buffers at the next
    forward and lose the other ranks' updates; classification's weights forward runs outside DDP,
    docs/method.md §3.3). No-op in a single process and for SyncBatchNorm."""
    if rank_world()[1] == 1:
        return
    # only BN layers in training mode update their statistics; their backward does not read the
    # running statistics, so they are rewritten through ``.data`` (no autograd version bump)
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


# ---------------------------------------------------------------------------------- the loop
@dataclass
class FitResult:
    best: float
    final: float
    steps: int
    cost: dict[str, object] = field(default_factory=dict)


class Trainer:
    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, precision,
                 total_steps: int, val_every: int, logger: RunLogger, device: torch.device,
                 snapshot_path: str | os.PathLike | None, resume_path: str | os.PathLike | None,
                 log_every: int = 0, resume_every: int = 0, ema=None, snapshot_on_equal: bool = False,
                 initial_eval: bool = False, metric_name: str = "metric", desc: str = "train",
                 is_main: bool = True, post_step: Callable[[int], None] | None = None) -> None:
        if total_steps < 1:
            raise UserError(f"{desc}: the run has {total_steps} iterations; raise --epochs or add data")
        self.model, self.optimizer, self.scheduler, self.precision = model, optimizer, scheduler, precision
        self.total_steps, self.val_every = total_steps, max(1, val_every)
        self.log_every = log_every if log_every > 0 else max(1, total_steps // 100)
        self.resume_every = resume_every
        self.logger, self.device, self.ema = logger, device, ema
        self.snapshot_path = Path(snapshot_path) if snapshot_path else None
        self.resume_path = Path(resume_path) if resume_path else None
        self.snapshot_on_equal, self.initial_eval = snapshot_on_equal, initial_eval
        self.metric_name, self.desc, self.is_main = metric_name, desc, is_main
        # called with the step number after the optimizer step, before the LR step; not called when
        # the fp16 GradScaler skipped the step for inf/NaN gradients (the LR scheduler still steps)
        self.post_step = post_step
        self.best = -math.inf
        self.step = 0

    # ------------------------------------------------------------------ checkpoints
    def _save_snapshot(self) -> None:
        if self.is_main and self.snapshot_path is not None:
            save_checkpoint(self.snapshot_path, model=self.model, optimizer=self.optimizer,
                            scheduler=self.scheduler, best_metric=self.best, step=self.step)

    def _save_resume(self) -> None:
        if self.resume_path is not None:  # a collective: every rank takes part, rank 0 writes
            save_training_state(self.resume_path, model=self.model, optimizer=self.optimizer,
                                scheduler=self.scheduler, scaler=self.precision.scaler, step=self.step,
                                best_metric=self.best, ema=self.ema, is_main=self.is_main)

    def _try_resume(self) -> None:
        if self.resume_path is None or not self.resume_path.is_file():
            return
        self.step, self.best = load_training_state(self.resume_path, model=self.model, optimizer=self.optimizer,
                                                   scheduler=self.scheduler, scaler=self.precision.scaler,
                                                   ema=self.ema, device=self.device)
        if self.is_main:
            print(f"{self.desc}: resuming at iteration {self.step}/{self.total_steps} from {self.resume_path}",
                  file=sys.stderr, flush=True)

    def cleanup(self) -> None:
        """Remove the resume checkpoint once the run's outputs are complete and recorded."""
        if self.is_main and self.resume_path is not None and self.resume_path.exists():
            self.resume_path.unlink()

    # ------------------------------------------------------------------ loop
    def _check_finite(self, finite: torch.Tensor) -> None:
        if not bool(finite):
            raise UserError(f"{self.desc}: non-finite loss by iteration {self.step} (precision {self.precision.mode}); "
                            "nothing was saved from this point on: lower --lr, or use fp32 (no --mixed-precision) "
                            "or --amp-dtype bf16, then rerun (the run resumes from its last checkpoint)")

    def _validate(self, evaluate: EvalFn, compete: bool) -> float:
        self.model.eval()
        try:
            metrics = dict(evaluate())
        finally:
            self.model.train()
        value = float(metrics[self.metric_name])
        self.logger.scalars(metrics, self.step, prefix="val/")
        if compete and (value > self.best or (self.snapshot_on_equal and value >= self.best)):
            self.best = value
            self._save_snapshot()
        return value

    def fit(self, batches: Callable[[int], Iterator[Any]], step_fn: StepFn, evaluate: EvalFn) -> FitResult:
        """Train ``total_steps`` iterations; ``batches(start)`` yields the batches from step ``start``."""
        self._try_resume()
        cost = CostMeter(self.device)
        self.model.train()
        if self.initial_eval and self.step == 0:
            self._validate(evaluate, compete=True)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        last_val = None
        stream = batches(self.step)
        bar = progress(total=self.total_steps, initial=self.step, desc=self.desc, unit="it")
        while self.step < self.total_steps:
            batch = next(stream)
            self.step += 1
            self.optimizer.zero_grad(set_to_none=True)
            loss, stats, images = step_fn(batch, self.step)
            finite &= torch.isfinite(loss.detach())
            stepped = backward_step(loss, self.optimizer, self.precision.scaler)
            if self.post_step is not None and stepped:  # skipped with the scaler's skipped step (fp16)
                self.post_step(self.step)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            cost.add(images)
            for key, value in {"loss": loss.detach(), **stats}.items():
                sums[key] = sums[key] + value.detach().float() if key in sums else value.detach().float()
            count += 1
            bar.update(1)
            if self.step % self.log_every == 0 or self.step == self.total_steps:
                self._check_finite(finite)  # the one host sync of a logging interval
                means = self.logger.train_interval(sums, count, self.step, self.optimizer.param_groups[0]["lr"])
                bar.set_postfix(loss=f"{means['loss']:.4f}", refresh=False)
                sums, count = {}, 0
            validate = self.step % self.val_every == self.val_every - 1 or self.step == self.total_steps - 1
            if validate or (self.resume_every and self.step % self.resume_every == 0):
                self._check_finite(finite)  # never snapshot or checkpoint diverged weights
            if validate:
                last_val = self._validate(evaluate, compete=True)
                bar.set_postfix(**{self.metric_name: f"{last_val:.2f}", "best": f"{self.best:.2f}"}, refresh=False)
                self._save_resume()
            elif self.resume_every and self.step % self.resume_every == 0:
                self._save_resume()
        bar.close()
        final = self._validate(evaluate, compete=False)
        if self.best == -math.inf:  # no validation point fell inside a very short run
            self.best = final
            self._save_snapshot()
        self._save_resume()
        self.logger.flush()
        return FitResult(best=self.best, final=final, steps=self.step, cost=cost.fields())
