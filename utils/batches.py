"""Deterministic, resumable batch streams.

Each sample's augmentation randomness is seeded from ``(run seed, epoch, index)``, not from the
state of whichever DataLoader worker happens to load it, and the batches are global: step ``s``'s
batch is the same whatever the number of workers, whether the run was interrupted and resumed at
``s``, and the number of torchrun processes, which split it (:class:`StepSampler`). That is what
makes an interrupted-and-resumed run, and a multi-process run, equal to an uninterrupted
single-process one.
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from utils.distributed import info as dist_info
from utils.distributed import rank_share
from utils.errors import UserError


def _mix(*values: int) -> int:
    """A 63-bit seed from a few integers (splitmix-style, stable across runs and platforms)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class SeededDataset(Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` runs ``base[index]`` under a fixed RNG state.

    Python's ``random``, numpy's global RNG and torch's CPU RNG are seeded for the call and restored
    afterwards, so loading in the main process (``workers=0``) does not disturb the training RNGs.
    """

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
        """A DataLoader batch at once: a base dataset with ``getitems_seeded(keys)`` gets the
        ``(index, seed)`` pairs itself (its items must depend on each seed alone, as ``self[key]``'s
        do; no RNG is re-seeded: ~0.4 ms an item saved); otherwise ``[self[key] for key in keys]``."""
        fetch = getattr(self.base, "getitems_seeded", None)
        return [self[key] for key in keys] if fetch is None else fetch(keys)


def epoch_order(size: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The order of ``range(size)`` in ``epoch``: a permutation drawn from ``(seed, epoch)``."""
    if not shuffle:
        return list(range(size))
    return torch.randperm(size, generator=torch.Generator().manual_seed(_mix(seed, epoch))).tolist()


class GlobalBatches:
    """The global batches of one dataset: batch ``b`` is ``[(index, sample_seed), ...]``.

    Epoch ``e`` visits ``epoch_order(size, seed, e)`` in batches of ``batch_size`` (the last one
    smaller, no drop_last, as in the original); global batch number ``b`` is batch ``b % per_epoch``
    of epoch ``b // per_epoch``. The batch is the same whatever the number of processes: the
    processes split it (:func:`utils.distributed.rank_share`), they don't shard the dataset.
    """

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
    """Batch sampler over training steps: for step ``s = start, start + 1, ...`` the global batch is
    the concatenation of every part's global batch ``s`` (DMT: [pseudo; labelled]); this rank
    gets its contiguous share of it, as ``[(part, index, sample_seed), ...]`` (possibly empty when
    the global batch is smaller than the number of processes)."""

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
    """``ds[(part, index, seed)]`` = ``(part, datasets[part][index])`` under the sample's fixed RNG
    state (:class:`SeededDataset`)."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = [SeededDataset(d) for d in datasets]

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[int, Any]:
        part, index, seed = key
        return part, self.datasets[part][(index, seed)]

    def __getitems__(self, keys: list[tuple[int, int, int]]) -> list[tuple[int, Any]]:
        """A DataLoader batch at once, each part's keys through its :meth:`SeededDataset.__getitems__`
        (the batched fast path of datasets that have one), in the batch's order."""
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
    """Collates a rank's share part by part: ``(collate_0(items of part 0), collate_1(...), ...)``
    (a single part: its collated batch). Each part's collate gets a list that may be empty."""

    def __init__(self, collates: Sequence[Callable]) -> None:
        self.collates = list(collates)

    def __call__(self, items: list[tuple[int, Any]]) -> Any:
        out = tuple(fn([item for k, item in items if k == part]) for part, fn in enumerate(self.collates))
        return out[0] if len(out) == 1 else out


class EpochStream:
    """A dataset's training batches, epoch after epoch, from any step (see :class:`GlobalBatches`).

    ``batch_size`` is the **global** batch; under torchrun each rank loads only its share of it.
    ``len(stream)`` is the number of batches per epoch; ``iterate(start)`` yields this rank's
    collated share of global batches ``start, start + 1, ...`` forever. ``collate_fn`` receives the
    (possibly empty) list of this rank's items; None is torch's default collate.
    """

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
    """This rank's share of the concatenated global batches of ``streams``, step after step from
    ``start``; the first stream's loader settings are used. One DataLoader over all of them, so the
    workers load exactly this rank's items (no sample is loaded twice)."""
    first = streams[0]
    # A private generator: creating an iterator draws a worker base seed from it, and drawing
    # from the global one would make the training RNG depend on the number of resumes.
    loader = DataLoader(StepDataset([s.dataset for s in streams]),
                        batch_sampler=StepSampler([s.batches for s in streams], start),
                        collate_fn=_PartsCollate([s.collate_fn for s in streams]),
                        generator=torch.Generator().manual_seed(_mix(first.seed, 2)), **first.loader_kwargs)
    return iter(loader)


def paired_batches(primary: EpochStream, secondary: EpochStream, start: int = 0) -> Iterator[tuple[Any, Any]]:
    """DMT's batch pairs: step ``s`` takes global batch ``s`` of the primary (pseudo) stream, which
    defines the epoch, and global batch ``s`` of the secondary (labelled) stream, which restarts
    when exhausted; the processes split the concatenated [primary; secondary] batch. Yields this
    rank's ``(primary part, secondary part)``, either of which may hold no sample."""
    return step_batches([primary, secondary], start)


class ShardSampler(Sampler):
    """This rank's share of ``range(size)`` for evaluation and labelling: every ``world``-th index
    from ``rank``, in order, **without** padding (unlike training), so that no sample is counted
    twice when the ranks' results are summed or pooled."""

    def __init__(self, size: int) -> None:
        d = dist_info()
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
