"""The classification train transform on a whole batch of uint8 images, on the training device
(docs/method.md §6.2): crop 32 (pad 4, fill 128) → flip 0.5 → RandomRandAugment(n, m_max) → Normalize.
It computes the exact pixels of :func:`classification.augment.train_transform` (the PIL path) for the
same per-image choices, op by op. Three modules, in the order a batch goes through them:

* here, the loader side: a DataLoader worker only fetches raw uint8 rows (:class:`RawRowsDataset`:
  an array view and a 63-bit key from the per-sample seeded ``random``, fetched a batch at a time
  through :meth:`utils.trainer.SeededDataset.__getitems__`) and stacks them in the collate
  (:class:`RawCollate`); the training stream is the usual :class:`utils.trainer.EpochStream` with
  that ``collate_fn`` (:func:`for_loader`), so order, seeds, sharding and resume positions are the
  PIL path's;
* :mod:`classification.batch_ops`: the batch's random choices, drawn in the collate, vectorised,
  from the keys (:func:`~classification.batch_ops.draw_params`), the
  :class:`~classification.batch_ops.RawBatch` that carries images and choices to the device, and
  :class:`~classification.batch_ops.BatchRandAugment`, the crop, flip, the 16 ops and Normalize on
  the device (:func:`on_device` puts it after the stream).

The PIL path stays the default on CPU (and is what ``--cpu-augment`` selects everywhere); this one is
the default on CUDA and is forced on CPU with ``--device-augment`` (:func:`resolve`).
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from classification.batch_ops import SIZE, BatchRandAugment, RawBatch, draw_params
from utils.errors import UserError


# ----------------------------------------------------------------------------- host: the loader
class RawRowsDataset(Dataset):
    """Raw CIFAR rows (N, 3, 32, 32) uint8 and targets. ``ds[index]`` = ``(row, key, target)``: the
    uint8 row (a view), a 63-bit key drawn from Python's ``random`` — which the training stream
    seeds with the sample's (seed, epoch, index) seed (:class:`utils.trainer.SeededDataset`) — and
    the target of :class:`classification.cifar.CifarDataset` (int label, float32 soft label, or the
    index when there are no targets). :class:`RawCollate` turns a list of them into a batch."""

    def __init__(self, images_chw: np.ndarray, targets: np.ndarray | torch.Tensor | None) -> None:
        if images_chw.ndim != 4 or images_chw.shape[1:] != (3, SIZE, SIZE) or images_chw.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, 3, 32, 32), got {images_chw.dtype} {images_chw.shape}")
        self.images = np.ascontiguousarray(images_chw)
        self.targets = None if targets is None else torch.as_tensor(np.asarray(targets))

    @classmethod
    def from_dataset(cls, dataset: Any) -> "RawRowsDataset":
        """From a :class:`classification.cifar.CifarDataset` (HWC images): one CHW copy of its rows."""
        return cls(dataset.images.transpose(0, 3, 1, 2), dataset.targets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, Any]:
        target = index if self.targets is None else self.targets[index]
        return self.images[index], random.getrandbits(63), target

    def getitems_seeded(self, keys: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, int, Any]]:
        """``[SeededDataset(self)[key] for key in keys]`` without re-seeding the global RNGs (the fast
        path of :meth:`utils.trainer.SeededDataset.__getitems__`): the key is the first 63 bits of
        ``random.Random(seed)``, what ``random.seed(seed)`` then :meth:`__getitem__` draws."""
        return [(self.images[index], random.Random(seed).getrandbits(63),
                 index if self.targets is None else self.targets[index]) for index, seed in keys]

    def empty_targets(self) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.int64) if self.targets is None else self.targets[:0]


class RawCollate:
    """collate_fn of the batched path: ``[(row, key, target), ...]`` -> ``(RawBatch, targets)``; the
    batch's choices are drawn here, vectorised, from the keys (:func:`draw_params`). An empty list
    (a rank's share of a global batch smaller than the number of processes) gives an empty batch."""

    def __init__(self, n: int, m_max: int, empty_targets: torch.Tensor) -> None:
        self.n, self.m_max, self.empty_targets = n, m_max, empty_targets

    def __call__(self, items: Sequence[tuple[np.ndarray, int, Any]]) -> tuple[RawBatch, torch.Tensor]:
        if not items:
            rows, keys, targets = np.zeros((0, 3, SIZE, SIZE), np.uint8), np.zeros(0, np.uint64), self.empty_targets
        else:
            rows = np.stack([item[0] for item in items])
            keys = np.array([item[1] for item in items], dtype=np.uint64)
            targets = default_collate([item[2] for item in items])
        return RawBatch.build(rows, draw_params(keys, self.n, self.m_max)), targets


def for_loader(dataset: Any, augmenter: "BatchRandAugment | None") -> tuple[Any, RawCollate | None]:
    """(dataset, collate_fn) for the training stream of a CifarDataset: itself and the default
    collate on the PIL path (``augmenter`` None), else its raw rows and :class:`RawCollate`."""
    if augmenter is None:
        return dataset, None
    raw = RawRowsDataset.from_dataset(dataset)
    return raw, RawCollate(augmenter.n, augmenter.m_max, raw.empty_targets())


def augment_batches(batches: Iterator[Any], augmenter: "BatchRandAugment") -> Iterator[Any]:
    """The stream's batches with every :class:`RawBatch` replaced by its augmented, normalised float32
    images on the device and every tensor uploaded without blocking (same nesting: ``(images,
    targets)``, or DMT's ``((pseudo images, probs), (labelled images, labels))``)."""
    def place(obj: Any) -> Any:
        if isinstance(obj, RawBatch):
            return augmenter(obj)
        if isinstance(obj, torch.Tensor):
            return obj.to(augmenter.device, non_blocking=True)
        if isinstance(obj, (tuple, list)):
            return type(obj)(place(o) for o in obj)
        return obj
    for batch in batches:
        yield place(batch)


def on_device(batches: Callable[[int], Iterator[Any]], augmenter: "BatchRandAugment | None") -> Callable[[int], Iterator[Any]]:
    """``batches(start)`` of the Trainer, through the device augmentation when ``augmenter`` is set."""
    if augmenter is None:
        return batches
    return lambda start: augment_batches(batches(start), augmenter)


# ----------------------------------------------------------------------------- choosing the path
def resolve(args: Any, device: torch.device, randaugment: bool) -> bool:
    """Whether training augments on the device: ``--device-augment`` forces it, ``--cpu-augment`` keeps
    the PIL path, and by default it is on for CUDA with RandomRandAugment (the PIL path stays the
    CPU default: the original's exact pixels and RNG stream). Only RandomRandAugment has a batched
    version, so ``--device-augment`` with AutoAugment (``--aa``, or ``main_fs`` without ``--ra``) is an error."""
    if getattr(args, "device_augment", False):
        if not randaugment:
            raise UserError("--device-augment implements RandomRandAugment only: drop --device-augment, "
                            "or use RandomRandAugment (main_fs --ra; main_dmt without --aa)")
        return True
    if getattr(args, "cpu_augment", False):
        return False
    return randaugment and device.type == "cuda"
