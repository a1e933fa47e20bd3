"""One labelling pass over the unlabelled list, and its files (docs/method.md §2.1; the program around
it is :mod:`segmentation.labeling`).

**One forward pass per image.** While :class:`utils.pseudo_labels.CBCSampler` pools every 16th
pixel (row-major) of every image by predicted class — on the device and over all torchrun ranks —,
each image's per-pixel (label uint8, confidence float16 under autocast / float32 otherwise) at its
original size goes into a :class:`LabelCache`: host memory up to ``--label-cache-gb`` (default a
quarter of the machine's available memory, shared by the ranks of a node), then an on-disk scratch
file in the pass's ``.partial`` folder (read back with ``np.memmap``, deleted afterwards). Once the
per-class thresholds for ``--label-ratio`` are known, each cached image is thresholded — a pixel
becomes 255 when its confidence is strictly below its class's threshold — and written as the
float32 H×W×2 (label, confidence) array ``<pseudo-dir>/<id>.npy`` by a small thread pool. The files
are byte-identical to those of the original's two forward passes, which ``--label-cache-gb 0``
still runs (the second pass recomputes the same predictions instead of reading them back).
Classes without a sample go to ``exceptions.txt``.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from segmentation.evaluation import upsampled_probabilities
from segmentation.label_cache import CACHE_FILE, LabelCache
from utils import distributed
from utils.io import save_npy_atomic
from utils.metrics import ConfusionMatrix
from utils.pseudo_labels import IGNORE_INDEX, CBCSampler, threshold_labels
from utils.trainer import to_device


class AsyncNpyWriter:
    """Saves arrays atomically on a few threads; at most ``max_pending`` arrays wait in memory.
    :meth:`close` waits for every write and re-raises the first failure."""

    def __init__(self, threads: int = 4, max_pending: int = 64) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="npy-writer")
        self.pending: list[Future] = []
        self.max_pending = max_pending

    def submit(self, path: Path, array: np.ndarray) -> None:
        self.pending.append(self.pool.submit(save_npy_atomic, path, array))
        if len(self.pending) > self.max_pending:
            done, self.pending = self.pending[: len(self.pending) // 2], self.pending[len(self.pending) // 2:]
            for future in done:
                future.result()

    def close(self) -> None:
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pending = []
            self.pool.shutdown(wait=True)

    def __enter__(self) -> "AsyncNpyWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:  # already failing: don't mask the error, just stop the threads
            for future in self.pending:
                future.cancel()
            self.pool.shutdown(wait=True)


def predict(model: nn.Module, images: torch.Tensor, round_fp16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, label) N×H×W at the batch's (test) size, docs/method.md §2.1 steps 1 and 3."""
    confidence, label = upsampled_probabilities(model(images), images.shape[-2:]).max(dim=1)
    if round_fp16:
        confidence = confidence.half().float()
    return confidence, label


def predicted_batches(model: nn.Module, loader: Iterable, device: torch.device, precision, memory_format
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[str],
                                         list[tuple[int, int]]]]:
    """Per batch: confidence and label at the test size, the ground truth at the test size (None
    unless the loader gives it), the ids, and each image's crop (h, w) (its original size clamped
    to the test size, docs/method.md §2.1 step 2)."""
    round_fp16 = precision.enabled
    with torch.no_grad():
        for images, gt, ids, sizes in loader:
            images = to_device(images, device, memory_format)
            gt = None if gt is None else gt.to(device, non_blocking=True)
            with precision.autocast():
                confidence, label = predict(model, images, round_fp16)
            height, width = images.shape[-2:]
            crops = [(min(h, height), min(w, width)) for h, w in sizes]
            yield confidence, label, gt, ids, crops


def collect_samples(batches: Iterable, sampler: CBCSampler, teacher: ConfusionMatrix | None = None,
                    cache: LabelCache | None = None, cache_half: bool = False) -> None:
    """First pass: the CBC samples of every image (its crop only); the teacher's confusion with the
    ground truth (diagnostics only); with ``cache``, each crop's (label, confidence[, gt]) on the host."""
    for confidence, label, gt, ids, crops in batches:
        for i, (h, w) in enumerate(crops):
            sampler.add(confidence[i, :h, :w], label[i, :h, :w])
            if teacher is not None and gt is not None:
                teacher.update(gt[i, :h, :w], label[i, :h, :w])
        if cache is None:
            continue
        # one transfer per batch and field; uint8 labels, fp16 confidences where they are fp16-rounded
        host = [label.to(torch.uint8).cpu().numpy(), (confidence.half() if cache_half else confidence).cpu().numpy()]
        if teacher is not None and gt is not None:
            host.append(gt.to(torch.uint8).cpu().numpy())
        for i, (sample_id, (h, w)) in enumerate(zip(ids, crops)):
            cache.put(sample_id, tuple(a[i, :h, :w] for a in host))


def write_labels(batches: Iterable, thresholds: torch.Tensor, folder: Path, writer: AsyncNpyWriter,
                 kept_confusion: ConfusionMatrix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Second forward pass (``--label-cache-gb 0``): threshold and write each image's H×W×2 float32
    array; returns the kept and total pixel counts (device tensors, read back once by the caller)."""
    kept = total = None
    for confidence, label, gt, ids, crops in batches:
        label = threshold_labels(confidence, label, thresholds)
        pairs = torch.stack([label.float(), confidence], dim=-1).cpu().numpy()  # one transfer per batch
        for i, (sample_id, (h, w)) in enumerate(zip(ids, crops)):
            writer.submit(folder / f"{sample_id}.npy", np.ascontiguousarray(pairs[i, :h, :w]))
            k = (label[i, :h, :w] != IGNORE_INDEX).sum()
            kept = k if kept is None else kept + k
            total = h * w if total is None else total + h * w
            if kept_confusion is not None and gt is not None:
                kept_confusion.update(gt[i, :h, :w], label[i, :h, :w])
    device = thresholds.device
    kept = kept if kept is not None else torch.zeros((), dtype=torch.long, device=device)
    return kept.double(), torch.tensor(float(total or 0), dtype=torch.float64, device=device)


def _write_cached(path: Path, arrays: tuple[np.ndarray, ...], thresholds: torch.Tensor,
                  num_classes: int | None) -> tuple[int, int, torch.Tensor | None]:
    """One cached image: threshold, write, count (a writer thread's job; torch and numpy release the GIL)."""
    label = torch.from_numpy(arrays[0]).long()
    confidence = torch.from_numpy(arrays[1]).float()
    label = threshold_labels(confidence, label, thresholds)
    save_npy_atomic(path, torch.stack([label.float(), confidence], dim=-1).numpy())
    matrix = None
    if num_classes is not None and len(arrays) == 3:
        confusion = ConfusionMatrix(num_classes, "cpu")
        confusion.update(torch.from_numpy(arrays[2]), label)
        matrix = confusion.matrix
    return int((label != IGNORE_INDEX).sum()), label.numel(), matrix


def write_cached_labels(cache: LabelCache, thresholds: torch.Tensor, folder: Path,
                        kept_confusion: ConfusionMatrix | None = None, threads: int = 4) -> tuple[int, int]:
    """Threshold each cached image on the host and write it, on ``threads`` threads (the same float32
    values, hence the same bytes, as :func:`write_labels`: fp16 confidences are exact in float32);
    returns (kept, total) and adds the kept labels' confusion to ``kept_confusion``."""
    thresholds = thresholds.float().cpu()
    num_classes = kept_confusion.num_classes if kept_confusion is not None else None
    kept = total = 0
    pending: list[Future] = []

    def collect(future: Future) -> None:
        nonlocal kept, total
        k, t, matrix = future.result()
        kept, total = kept + k, total + t
        if matrix is not None:
            kept_confusion.matrix += matrix

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="label-writer") as pool:
        try:
            for sample_id in cache.keys():
                pending.append(pool.submit(_write_cached, folder / f"{sample_id}.npy", cache.get(sample_id),
                                           thresholds, num_classes))
                if len(pending) >= 4 * threads:  # bounded memory, in order
                    collect(pending.pop(0))
            while pending:
                collect(pending.pop(0))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return kept, total


@dataclass
class PassResult:
    thresholds: torch.Tensor          # per class, float32 on the device
    missing: list[int]                # classes without a sample
    kept: float                       # kept pixels, all ranks
    total: float                      # pixels, all ranks
    teacher: torch.Tensor | None      # C×C confusion of the argmax (all ranks), diagnostics only
    kept_confusion: torch.Tensor | None  # C×C confusion of the written labels (all ranks)
    passes: int                       # forward passes per image (1 with the cache)
    spilled_bytes: int                # this rank's cache bytes that went to the scratch file

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.total if self.total > 0 else float("nan")


def label_pass(model: nn.Module, loader: Iterable, device: torch.device, precision, memory_format,
               num_classes: int, ratio: float, stride: int, folder: Path, cache_bytes: int,
               diagnostics: bool = False, progress=None) -> PassResult:
    """Label every image of ``loader`` into ``folder`` (docs/method.md §2.1): one forward pass with a
    cache of ``cache_bytes`` (> 0), else two. ``diagnostics``: the loader gives ground truth, compared
    with the labels after the fact (never used for thresholds or files). Collective under torchrun."""
    wrap = progress or (lambda it, **_: it)
    sampler = CBCSampler(num_classes, stride=stride, device=device)
    teacher = ConfusionMatrix(num_classes, device) if diagnostics else None
    cache = LabelCache(cache_bytes, folder / CACHE_FILE.format(rank=distributed.info().rank)) if cache_bytes > 0 else None
    try:
        batches = predicted_batches(model, loader, device, precision, memory_format)
        collect_samples(wrap(batches, desc="labelling" if cache else "labelling 1/2"), sampler, teacher, cache,
                        cache_half=precision.enabled)
        thresholds = sampler.thresholds(ratio)
        missing = sampler.missing_classes()
        if cache is not None:
            kept_cm = ConfusionMatrix(num_classes, "cpu") if diagnostics else None
            kept, total = write_cached_labels(cache, thresholds, folder, kept_cm)
            counts = torch.tensor([float(kept), float(total)], dtype=torch.float64, device=device)
        else:
            kept_cm = ConfusionMatrix(num_classes, device) if diagnostics else None
            batches = predicted_batches(model, loader, device, precision, memory_format)
            with AsyncNpyWriter() as writer:
                counts = torch.stack(write_labels(wrap(batches, desc="labelling 2/2"), thresholds, folder, writer,
                                                  kept_cm))
        spilled = cache.spilled if cache is not None else 0
    finally:
        if cache is not None:
            cache.close()
    distributed.all_reduce_sum_(counts)
    kept_matrix = teacher_matrix = None
    if diagnostics:
        teacher_matrix = teacher.all_reduce().matrix
        kept_matrix = distributed.all_reduce_sum_(kept_cm.matrix.to(device))
    counts = counts.cpu()
    return PassResult(thresholds, missing, float(counts[0]), float(counts[1]), teacher_matrix, kept_matrix,
                      1 if cache is not None else 2, spilled)
