"""Deterministic, resumable batch streams.

Each sample's augmentation randomness is seeded from ``(run seed, epoch, index)``, not from the
state of whichever DataLoader worker happens to load it. So the batches of step ``s`` are the same
whatever the number of workers, whether the run was interrupted and resumed at ``s``, and (under
torchrun) however the data is sharded. That is what makes an interrupted-and-resumed run equal to an
uninterrupted one.
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.distributed import info as dist_info


def _mix(*values: int) -> int:
    """A 63-bit seed from a few integers (splitmix-style, stable across runs and platforms)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class SeededSampler(Sampler):
    """Yields ``(index, sample_seed)`` for one epoch; shuffled per ``(seed, epoch)``; sharded over ranks.

    Like DistributedSampler, the permutation is padded (by repetition) to a multiple of the world
    size and rank ``r`` takes every ``world``-th entry from ``r``. ``set_epoch(e, start)`` selects the
    epoch and skips this rank's first ``start`` samples (for resuming mid-epoch).
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        d = dist_info()
        self.rank, self.world = d.rank, d.world_size
        self.per_rank = math.ceil(size / self.world)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world
        order += order[: total - len(order)]
        return order[self.rank:total:self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._order()[self.start:]:
            yield index, _mix(self.seed, self.epoch, index, 1)

    def __len__(self) -> int:
        return self.per_rank - self.start


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


class EpochStream:
    """Batches of a dataset, epoch after epoch, from any global batch position.

    ``len(stream)`` is the number of batches per epoch (no drop_last, as in the original).
    ``iterate(start)`` yields batches forever starting at global batch number ``start``
    (epoch ``start // len``, batch ``start % len`` of it).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, shuffle: bool = True,
                 collate_fn: Callable | None = None, **loader_kwargs: Any) -> None:
        self.sampler = SeededSampler(len(dataset), seed, shuffle)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.per_epoch = math.ceil(self.sampler.per_rank / batch_size)
        # A private generator: creating an iterator draws a worker base seed from it, and drawing
        # from the global one would make the training RNG depend on the number of epochs/resumes.
        self.loader = DataLoader(SeededDataset(dataset), batch_size=batch_size, sampler=self.sampler,
                                 drop_last=False, collate_fn=collate_fn,
                                 generator=torch.Generator().manual_seed(_mix(seed, 2)), **loader_kwargs)

    def __len__(self) -> int:
        return self.per_epoch

    def iterate(self, start: int = 0) -> Iterator[Any]:
        epoch, offset = divmod(start, self.per_epoch)
        while True:
            self.sampler.set_epoch(epoch, offset * self.batch_size)
            yield from self.loader
            epoch, offset = epoch + 1, 0


def paired_batches(primary: EpochStream, secondary: EpochStream, start: int = 0) -> Iterator[tuple[Any, Any]]:
    """DMT's batch pairs: step ``s`` takes batch ``s`` of the primary (pseudo) stream, which defines
    the epoch, and batch ``s`` of the secondary (labelled) stream, which restarts when exhausted."""
    return zip(primary.iterate(start), secondary.iterate(start))


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
