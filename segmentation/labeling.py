"""The class-balanced curriculum labelling pass (SPEC §2.1): ``--state 1 --labeling``.

The labeller (``--continue-from``) runs in eval mode on the test-preprocessed unlabelled list
(VOC padded to 505×505, City resized to 512×1024), batch ``--batch-size-labeled``, under autocast
with ``--mixed-precision``. For each image: logits upsampled bilinearly (align_corners=True) to the
test size, the top-left H×W of the *original* size kept (City clamps → 512×1024), softmax,
label = argmax, confidence = max (rounded to fp16 under autocast, as the original's files hold).

1. First pass: :class:`utils.pseudo_labels.CBCSampler` pools every 16th pixel (row-major) of every
   image by predicted class, on the device and over all torchrun ranks, and gives the per-class
   thresholds for ``--label-ratio``; classes without a sample go to ``exceptions.txt``.
2. Second pass: the same predictions; a pixel becomes 255 when its confidence is strictly below
   its class's threshold. Each image's float32 H×W×2 (label, confidence) array is written as
   ``<pseudo-dir>/<id>.npy`` by a small thread pool while the next batch runs.

Files go to ``<pseudo-dir>.partial``; when every rank is done, rank 0 adds ``exceptions.txt`` and
the record ``labeling.json`` (thresholds, kept fraction, what was labelled) and renames the folder
into place. A pass killed midway leaves no half-written pseudo folder and restarts cleanly.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from segmentation import builders, run_state
from segmentation.datasets import collate
from segmentation.evaluation import upsampled_probabilities
from utils import distributed
from utils.batches import eval_loader
from utils.cli import Runtime, data_loader_kwargs
from utils.io import append_line, save_npy_atomic, write_text_atomic
from utils.pseudo_labels import IGNORE_INDEX, CBCSampler, threshold_labels
from utils.run_log import RunLogger


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
    """(confidence, label) N×H×W at the batch's (test) size, SPEC §2.1 steps 1 and 3."""
    confidence, label = upsampled_probabilities(model(images), images.shape[-2:]).max(dim=1)
    if round_fp16:
        confidence = confidence.half().float()
    return confidence, label


def labelled_batches(model: nn.Module, loader: Iterable, device: torch.device, precision, memory_format
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str], list[tuple[int, int]]]]:
    """Per batch: confidence and label at the test size, the ids, and each image's crop (h, w)
    (its original size clamped to the test size, SPEC §2.1 step 2)."""
    round_fp16 = precision.enabled
    with torch.no_grad():
        for images, _, ids, sizes in loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            with precision.autocast():
                confidence, label = predict(model, images, round_fp16)
            height, width = images.shape[-2:]
            crops = [(min(h, height), min(w, width)) for h, w in sizes]
            yield confidence, label, ids, crops


def collect_samples(batches: Iterable, sampler: CBCSampler) -> None:
    """First pass: the CBC samples of every image (its crop only)."""
    for confidence, label, _, crops in batches:
        for i, (h, w) in enumerate(crops):
            sampler.add(confidence[i, :h, :w], label[i, :h, :w])


def write_labels(batches: Iterable, thresholds: torch.Tensor, folder: Path, writer: AsyncNpyWriter
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Second pass: threshold and write each image's H×W×2 float32 array; returns the kept and
    total pixel counts (device tensors, read back once by the caller)."""
    kept = total = None
    for confidence, label, ids, crops in batches:
        label = threshold_labels(confidence, label, thresholds)
        pairs = torch.stack([label.float(), confidence], dim=-1).cpu().numpy()  # one transfer per batch
        for i, (sample_id, (h, w)) in enumerate(zip(ids, crops)):
            writer.submit(folder / f"{sample_id}.npy", np.ascontiguousarray(pairs[i, :h, :w]))
            k = (label[i, :h, :w] != IGNORE_INDEX).sum()
            kept = k if kept is None else kept + k
            total = h * w if total is None else total + h * w
    device = thresholds.device
    kept = kept if kept is not None else torch.zeros((), dtype=torch.long, device=device)
    return kept.double(), torch.tensor(float(total or 0), dtype=torch.float64, device=device)


def _swap_into_place(partial: Path, target: Path) -> None:
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.replace(old)
    partial.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def run_labeling(args: argparse.Namespace, rt: Runtime) -> None:
    """Label the whole unlabelled list with ``--continue-from`` into ``--pseudo-dir`` (SPEC §2.1)."""
    target = run_state.pseudo_dir(args)
    partial = target.with_name(target.name + run_state.PARTIAL_SUFFIX)
    num_classes = builders.num_classes(args)
    dataset = builders.labeling_set(args)
    model = builders.build_model(args, rt.device, rt.memory_format).eval()
    if args.compile:
        model = torch.compile(model)
    batch = distributed.per_rank(args.batch_size_labeled, "--batch-size-labeled")
    loader = eval_loader(dataset, batch, collate_fn=collate, **data_loader_kwargs(args.workers, rt.device))

    if rt.dist.is_main:
        shutil.rmtree(partial, ignore_errors=True)  # leftovers of a killed pass
        partial.mkdir(parents=True)
    distributed.barrier()

    sampler = CBCSampler(num_classes, stride=args.label_stride)
    collect_samples(labelled_batches(model, loader, rt.device, rt.precision, rt.memory_format), sampler)
    thresholds = sampler.thresholds(args.label_ratio)
    missing = sampler.missing_classes()
    with AsyncNpyWriter() as writer:
        kept, total = write_labels(labelled_batches(model, loader, rt.device, rt.precision, rt.memory_format),
                                   thresholds, partial, writer)
    counts = distributed.all_reduce_sum_(torch.stack([kept, total]))
    kept_fraction = float(counts[0] / counts[1]) if float(counts[1]) > 0 else float("nan")
    distributed.barrier()

    if rt.dist.is_main:
        for c in missing:
            append_line(partial / "exceptions.txt",
                        f"{args.exp_name}: class {c} has no sampled pixel (label ratio {args.label_ratio})")
        record = {"key": run_state.labeling_key(args), "exp_name": args.exp_name, "images": len(dataset),
                  "kept_fraction": kept_fraction, "thresholds": [float(t) for t in thresholds.cpu()],
                  "missing_classes": missing, "precision": rt.precision.mode}
        write_text_atomic(partial / run_state.LABELING_RECORD, json.dumps(record, indent=2) + "\n")
        _swap_into_place(partial, target)
        logger = RunLogger(run_state.run_files(args).tb_dir, args.exp_name)
        step = int(round(args.label_ratio * 100))
        logger.scalar("labeling/kept_fraction", kept_fraction, step)
        logger.scalar("labeling/label_ratio", args.label_ratio, step)
        logger.close()
        print(f"{args.exp_name}: labelled {len(dataset)} images into {target} with ratio {args.label_ratio}: "
              f"kept {kept_fraction:.2%} of the pixels", flush=True)
        if missing:
            print(f"{args.exp_name}: classes {missing} were never predicted (listed in exceptions.txt)",
                  file=sys.stderr, flush=True)
    distributed.barrier()
