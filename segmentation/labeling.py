"""The class-balanced curriculum labelling pass (docs/method.md §2.1): ``--state 1 --labeling``.

The labeller (``--continue-from``) runs in eval mode on the test-preprocessed unlabelled list
(VOC padded to 505×505, City resized to 512×1024), batch ``--batch-size-labeled``, under autocast
with ``--mixed-precision``. For each image: logits upsampled bilinearly (align_corners=True) to the
test size, the top-left H×W of the *original* size kept (City clamps → 512×1024), softmax,
label = argmax, confidence = max (rounded to fp16 under autocast, as the original's files hold).

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

**Pseudo-label quality** (:mod:`utils.label_quality`): unless ``--no-gt-diagnostics``, the
unlabelled images' ground truth is loaded with them (it turns itself off, with a one-line note,
when a label file is missing) and, in the same pass, compared with the labeller's argmax and with
the written labels; nothing else reads it. The figures go into ``labeling.json``, to TensorBoard
(``labeling/...``, stepped by phase, with :data:`~utils.label_quality.SAMPLE_IMAGES` images of
image | pseudo labels | ground truth) and into the training run's ``log.txt`` line.

Files go to ``<pseudo-dir>.partial``; when every rank is done, rank 0 adds ``exceptions.txt`` and
the record ``labeling.json`` (thresholds, kept fraction, diagnostics, what was labelled, and each
file's size and modification time) and renames the folder into place. A pass that fails removes
its ``.partial`` folder (a file-system or runtime error ends with one line, exit 2); a pass killed
outright leaves it behind and the next run starts it afresh.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from segmentation import builders, run_state
from segmentation.label_cache import CACHE_FILE, LabelCache, cache_budget_bytes
from segmentation.datasets import collate, read_rgb
from segmentation.evaluation import upsampled_probabilities
from segmentation.palette import palette, sample_strip
from utils import distributed, label_quality
from utils.distributed import eval_loader
from utils.cli import Runtime, data_loader_kwargs
from utils.errors import UserError
from utils.io import append_line, save_npy_atomic, write_text_atomic
from utils.metrics import ConfusionMatrix
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


# ----------------------------------------------------------------------------------- the passes
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
            images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
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


# ----------------------------------------------------------------------------------- the program
def _swap_into_place(partial: Path, target: Path) -> None:
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.replace(old)
    partial.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def labeling_dataset(args: argparse.Namespace, want_gt: bool, announce: bool):
    """The unlabelled list with the test preprocessing, with its ground truth when ``want_gt`` and
    every label file exists (else without, and a one-line note on stderr when ``announce``)."""
    dataset = builders.labeling_set(args)
    if not want_gt:
        return dataset, False
    missing = [i for i in dataset.ids if not dataset.label_path(i).is_file()]
    if missing:
        if announce:
            print(f"note: {len(missing)} of {len(dataset.ids)} unlabelled images have no ground truth "
                  f"(e.g. {dataset.label_path(missing[0])}); pseudo-label diagnostics are off "
                  "(--no-gt-diagnostics silences this)", file=sys.stderr, flush=True)
        return dataset, False
    return builders.labeling_set(args, ground_truth=True), True


def log_sample_images(logger: RunLogger, dataset, folder: Path, step: int, colours: np.ndarray) -> None:
    """The first :data:`~utils.label_quality.SAMPLE_IMAGES` images: image | pseudo labels | ground truth."""
    from PIL import Image

    for index in range(min(label_quality.SAMPLE_IMAGES, len(dataset))):
        sample_id = dataset.ids[index]
        pseudo = np.load(folder / f"{sample_id}.npy")[..., 0]
        h, w = pseudo.shape
        gt = None
        if dataset.load_labels:
            _, target, _, _ = dataset[index]
            gt = target.numpy()[:h, :w]
        rgb = read_rgb(dataset.image_path(sample_id))
        if dataset.dataset_name == "city" and rgb.shape[:2] != (h, w):  # City labels at the resized size
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        logger.writer.add_image(f"labeling/sample_{index}", sample_strip(rgb, pseudo, gt, colours),
                                step, dataformats="HWC")


def run_labeling(args: argparse.Namespace, rt: Runtime) -> None:
    """Label the whole unlabelled list with ``--continue-from`` into ``--pseudo-dir`` (docs/method.md §2.1)."""
    start = time.perf_counter()
    if args.label_cache_gb is not None and not args.label_cache_gb >= 0:
        raise UserError(f"--label-cache-gb {args.label_cache_gb}: must be >= 0 (0 = no cache, two forward passes)")
    target = run_state.pseudo_dir(args)
    partial = target.with_name(target.name + run_state.PARTIAL_SUFFIX)
    num_classes = builders.num_classes(args)
    dataset, gt = labeling_dataset(args, not args.no_gt_diagnostics, announce=rt.dist.is_main)
    # every rank must run the same collectives: ground-truth diagnostics on all ranks or on none
    with_gt = distributed.all_reduce_sum_(torch.tensor(float(gt), device=rt.device))
    if gt and int(with_gt) != rt.dist.world_size:
        dataset, gt = labeling_dataset(args, False, announce=False)
    model = builders.build_model(args, rt.device, rt.memory_format).eval()
    if args.compile:
        model = torch.compile(model)
    batch = distributed.per_rank(args.batch_size_labeled, "--batch-size-labeled")
    loader = eval_loader(dataset, batch, collate_fn=collate, **data_loader_kwargs(args.workers, rt.device))

    try:
        if rt.dist.is_main:
            shutil.rmtree(partial, ignore_errors=True)  # leftovers of a killed pass
            partial.mkdir(parents=True)
        distributed.barrier()
        from utils.trainer import progress
        result = label_pass(model, loader, rt.device, rt.precision, rt.memory_format, num_classes,
                            args.label_ratio, args.label_stride, partial, cache_budget_bytes(args.label_cache_gb),
                            diagnostics=gt, progress=progress)
        distributed.barrier()
        if rt.dist.is_main:
            _finish(args, rt, dataset, result, partial, target, time.perf_counter() - start)
        distributed.barrier()
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, (OSError, RuntimeError, MemoryError)) and not isinstance(exc, UserError):
            detail = " ".join(str(exc).split()) or "no detail"
            raise UserError(f"{target}: labelling failed ({type(exc).__name__}: {detail}); removed {partial} — "
                            "check free disk space and permissions of the output folder, then rerun") from exc
        raise


def _finish(args: argparse.Namespace, rt: Runtime, dataset, result: PassResult, partial: Path, target: Path,
            seconds: float) -> None:
    """Rank 0: exceptions.txt, the record, TensorBoard, the swap into place and the summary line."""
    for c in result.missing:
        append_line(partial / "exceptions.txt",
                    f"{args.exp_name}: class {c} has no sampled pixel (label ratio {args.label_ratio})")
    files = run_state.npy_manifest(partial)
    if sorted(files) != sorted(dataset.ids):
        raise RuntimeError(f"labelling wrote {len(files)} files for {len(dataset.ids)} images")
    diagnostics = None
    if result.teacher is not None:
        diagnostics = label_quality.quality(result.kept_confusion, result.teacher)
    tb_name, phase = label_quality.series(args.exp_name, args.continue_from, args.label_phase)
    step = phase if phase is not None else 0
    record = {"key": run_state.labeling_key(args), "exp_name": args.exp_name, "images": len(dataset),
              "label_ratio": args.label_ratio, "phase": phase, "kept_fraction": result.kept_fraction,
              "thresholds": [float(t) for t in result.thresholds.cpu()], "missing_classes": result.missing,
              "precision": rt.precision.mode, "forward_passes": result.passes,
              "cache_spilled_bytes": result.spilled_bytes,
              "gt_diagnostics": diagnostics is not None, "diagnostics": diagnostics,
              "wall_s": round(seconds, 3), "images_per_s": len(dataset) / seconds if seconds > 0 else None,
              "files": files}
    write_text_atomic(partial / run_state.LABELING_RECORD, json.dumps(label_quality.json_safe(record), indent=2) + "\n")
    logger = RunLogger(run_state.run_files(args).tb_dir, tb_name)
    try:
        label_quality.log_scalars(logger, record, step)
        log_sample_images(logger, dataset, partial, step, palette(args.dataset))
    finally:
        logger.close()
    _swap_into_place(partial, target)
    quality_text = ""
    if diagnostics is not None:
        quality_text = (f"; kept labels {_pct(diagnostics['accuracy'])} right, mIoU {_pct(diagnostics['miou'])} "
                        f"(teacher before thresholds: mIoU {_pct(diagnostics['teacher_miou'])})")
    print(f"{args.exp_name}: labelled {len(dataset)} images into {target} with ratio {args.label_ratio}: "
          f"kept {result.kept_fraction:.2%} of the pixels{quality_text}", flush=True)
    if result.missing:
        print(f"{args.exp_name}: classes {result.missing} were never predicted (listed in exceptions.txt)",
              file=sys.stderr, flush=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"
