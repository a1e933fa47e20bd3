"""Classification augmentation throughput (docs/method.md §6.2): the PIL train transform per DataLoader
worker and in a DataLoader, the batched path (:mod:`classification.batch_augment`) on the CPU with a
number of torch threads and in DataLoader workers, and its transform on the training device.

* **PIL**: :func:`classification.augment.train_transform` through :class:`utils.trainer.SeededDataset`,
  as a DataLoader worker runs it, in one thread, and in a DataLoader with ``workers`` processes.
* **batched**: the loader's gather + draws (:class:`~classification.batch_augment.RawCollate`), then
  :class:`~classification.batch_ops.BatchRandAugment`, on the CPU with each thread count and on
  CUDA when there is one. The ratio "batched / PIL at the same core count" compares T torch threads
  with T PIL workers (T = 1 with the single-thread PIL rate).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bench.common import SEED, fmt
from bench.training_steps import synchronize
from classification import batch_augment
from classification.augment import train_transform
from classification.cifar import CifarDataset
from utils.trainer import EpochStream, SeededDataset, _mix


def random_images(count: int, seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def with_threads(threads: int, fn: Callable[[], float]) -> float:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


def pil_single(images: np.ndarray) -> float:
    """Images/s of the PIL train transform in this thread (one DataLoader worker's work)."""
    dataset = SeededDataset(CifarDataset(images, np.zeros(len(images), np.int64), train_transform()))

    def run() -> float:
        dataset[(0, 1)]  # warm-up
        start = time.perf_counter()
        for i in range(len(images)):
            dataset[(i, _mix(SEED, i))]
        return len(images) / (time.perf_counter() - start)
    return with_threads(1, run)


def pil_loader(images: np.ndarray, workers: int, batch: int, batches: int) -> float:
    """Images/s of a ``workers``-process DataLoader running the PIL transform, in the steady state:
    timed from the arrival of the ``workers``-th batch (every worker has started and delivered one)
    over the next ``batches`` batches (each worker prefetches one batch ahead)."""
    dataset = CifarDataset(images, np.zeros(len(images), np.int64), train_transform())
    return loader_rate(EpochStream(dataset, batch, seed=SEED, num_workers=workers, persistent_workers=True,
                                   prefetch_factor=1), workers, batch, batches)


def loader_rate(stream: EpochStream, workers: int, batch: int, batches: int) -> float:
    """Images/s of ``stream`` from the arrival of its ``workers``-th batch over ``batches`` more."""
    it = stream.iterate(0)
    for _ in range(workers):  # start-up
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    del it
    return batches * batch / seconds


class _AugmentingCollate(batch_augment.RawCollate):
    """The whole batched path inside a loader worker: collate, then the transform on the worker's CPU."""

    augmenter: batch_augment.BatchRandAugment | None = None

    def __call__(self, items):
        raw, targets = super().__call__(items)
        if self.augmenter is None:
            self.augmenter = batch_augment.BatchRandAugment("cpu", self.n, self.m_max)
        return self.augmenter(raw), targets


def _raw(images: np.ndarray) -> batch_augment.RawRowsDataset:
    return batch_augment.RawRowsDataset(images.transpose(0, 3, 1, 2), np.zeros(len(images), np.int64))


def batched_loader(images: np.ndarray, workers: int, batch: int, batches: int) -> float:
    """Images/s of the batched path on the CPU in a ``workers``-process DataLoader (1 torch thread
    each, as DataLoader workers run), timed like :func:`pil_loader`."""
    dataset = _raw(images)
    return loader_rate(EpochStream(dataset, batch, seed=SEED, collate_fn=_AugmentingCollate(1, 10, dataset.empty_targets()),
                                   num_workers=workers, persistent_workers=True, prefetch_factor=1),
                       workers, batch, batches)


def batched_rates(images: np.ndarray, device: torch.device, threads: int, batch: int, batches: int) -> dict:
    """The batched path with ``threads`` torch threads: the loader part (batched seeded fetch +
    collate with the draws, what a worker does), the transform on ``device``, and both in series."""
    dataset = _raw(images)
    seeded = SeededDataset(dataset)
    collate = batch_augment.RawCollate(1, 10, dataset.empty_targets())
    augmenter = batch_augment.BatchRandAugment(device)
    keys = [[(i % len(images), _mix(SEED, b, i)) for i in range(batch)] for b in range(batches)]

    def load(k: list) -> batch_augment.RawBatch:
        raw = collate(seeded.__getitems__(k))[0]  # what a DataLoader worker does with a batch of keys
        return raw.pin_memory() if device.type == "cuda" else raw

    def run() -> dict:
        augmenter(load(keys[0]))  # warm-up
        synchronize(device)
        start = time.perf_counter()
        raws = [load(k) for k in keys]
        host = time.perf_counter() - start
        synchronize(device)
        start = time.perf_counter()
        for raw in raws:
            augmenter(raw)
        synchronize(device)
        transform = time.perf_counter() - start
        n = batch * batches
        return {"threads": threads, "device": str(device), "loader_images_per_s": n / host,
                "transform_images_per_s": n / transform, "images_per_s": n / (host + transform),
                "ms_per_batch_of_512": 512 * transform / n * 1000}
    return with_threads(threads, run) if device.type == "cpu" else run()


def measure_augmentation(device: torch.device, pil_images: int, workers: int, thread_counts: Sequence[int],
                         batch: int, batches: int) -> dict[str, Any]:
    """Every rate of the module doc on random images; the DataLoader rates only with ``workers`` > 0,
    the device transform only on CUDA."""
    cuda = device.type == "cuda"
    pool = random_images(max(pil_images, batch, 512))
    aug: dict[str, Any] = {"workers": workers, "batch": batch}
    aug["pil_per_worker"] = pil_single(pool[:pil_images])
    aug["pil_loader"] = pil_loader(pool, workers, batch, batches) if workers else None
    aug["batched_cpu"] = []
    for threads in thread_counts:
        row = batched_rates(pool, torch.device("cpu"), threads, batch, batches)
        pil_same = aug["pil_per_worker"] if threads == 1 else (aug["pil_loader"] if threads == workers else None)
        row["vs_pil"] = None if pil_same is None else row["images_per_s"] / pil_same
        aug["batched_cpu"].append(row)
    aug["batched_loader"] = batched_loader(pool, workers, batch, batches) if workers else None
    aug["batched_loader_vs_pil"] = (aug["batched_loader"] / aug["pil_loader"]) if workers else None
    aug["batched_device"] = batched_rates(pool, device, 1, batch, batches) if cuda else None
    return aug


def augmentation_table(aug: dict[str, Any]) -> list[str]:
    """The Markdown table of :func:`measure_augmentation`'s rates: (pipeline, cores, images/s, vs PIL)."""
    w = aug["workers"]
    rows: list[tuple[str, Any, float, str]] = [
        ("PIL (crop, flip, RandAugment, normalise), 1 thread", 1, aug["pil_per_worker"], "1.00×")]
    if aug.get("pil_loader") is not None:
        rows.append((f"PIL in a DataLoader, {w} workers", w, aug["pil_loader"], "1.00×"))
    for row in aug["batched_cpu"]:
        ratio = row.get("vs_pil")
        rows.append((f"batched on the CPU (loader part + transform), {row['threads']} thread(s)", row["threads"],
                     row["images_per_s"], fmt(ratio, ".2f") + ("" if ratio is None else "×")))
    if aug.get("batched_loader") is not None:
        rows.append((f"batched on the CPU in a DataLoader, {w} workers × 1 thread", w, aug["batched_loader"],
                     f"{aug['batched_loader_vs_pil']:.2f}×"))
    rows += [(f"- of which the loader part (fetch, collate, draws, sort), {row['threads']} thread(s)", row["threads"],
              row["loader_images_per_s"], "") for row in aug["batched_cpu"]]
    if aug.get("batched_device") is not None:
        row = aug["batched_device"]
        rows.append((f"batched transform on {row['device']} ({row['ms_per_batch_of_512']:.2f} ms / 512)", "GPU",
                     row["transform_images_per_s"], ""))
    return ["| pipeline | cores | images/s | vs PIL, same cores |", "|---|---|---|---|",
            *(f"| {name} | {cores} | {rate:.0f} |" + (f" {vs} |" if vs else " |") for name, cores, rate, vs in rows)]
