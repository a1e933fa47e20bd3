"""The class-balanced curriculum labelling pass (docs/method.md §2.1): ``--state 1 --labeling``.

The labeller (``--continue-from``) runs in eval mode on the test-preprocessed unlabelled list
(VOC padded to 505×505, City resized to 512×1024), batch ``--batch-size-labeled``, under autocast
with ``--mixed-precision``. For each image: logits upsampled bilinearly (align_corners=True) to the
test size, the top-left H×W of the *original* size kept (City clamps → 512×1024), softmax,
label = argmax, confidence = max (rounded to fp16 under autocast, as the original's files hold);
the pass itself (one forward per image, the CBC thresholds, the files) is
:func:`segmentation.label_pass.label_pass`.

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

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from segmentation import builders
from segmentation.datasets import collate, read_rgb
from segmentation.label_cache import cache_budget_bytes
from segmentation.label_pass import PassResult, label_pass
from segmentation.palette import palette, sample_strip
from segmentation.run_config import PARTIAL_SUFFIX, RunConfig
from utils import distributed, label_quality
from utils.distributed import eval_loader
from utils.cli import Runtime, data_loader_kwargs
from utils.errors import UserError
from utils.io import append_line, write_text_atomic
from utils.run_files import file_manifest
from utils.run_log import RunLogger


def _swap_into_place(partial: Path, target: Path) -> None:
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.replace(old)
    partial.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def labeling_dataset(cfg: RunConfig, want_gt: bool, announce: bool):
    """The unlabelled list with the test preprocessing, with its ground truth when ``want_gt`` and
    every label file exists (else without, and a one-line note on stderr when ``announce``)."""
    dataset = builders.labeling_set(cfg)
    if not want_gt:
        return dataset, False
    missing = [i for i in dataset.ids if not dataset.label_path(i).is_file()]
    if missing:
        if announce:
            print(f"note: {len(missing)} of {len(dataset.ids)} unlabelled images have no ground truth "
                  f"(e.g. {dataset.label_path(missing[0])}); pseudo-label diagnostics are off "
                  "(--no-gt-diagnostics silences this)", file=sys.stderr, flush=True)
        return dataset, False
    return builders.labeling_set(cfg, ground_truth=True), True


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


def run_labeling(cfg: RunConfig, rt: Runtime) -> None:
    """Label the whole unlabelled list with ``--continue-from`` into ``--pseudo-dir`` (docs/method.md §2.1)."""
    args = cfg.args
    start = time.perf_counter()
    if args.label_cache_gb is not None and not args.label_cache_gb >= 0:
        raise UserError(f"--label-cache-gb {args.label_cache_gb}: must be >= 0 (0 = no cache, two forward passes)")
    target = cfg.pseudo_dir
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    dataset, gt = labeling_dataset(cfg, not args.no_gt_diagnostics, announce=rt.dist.is_main)
    # every rank must run the same collectives: ground-truth diagnostics on all ranks or on none
    with_gt = distributed.all_reduce_sum_(torch.tensor(float(gt), device=rt.device))
    if gt and int(with_gt) != rt.dist.world_size:
        dataset, gt = labeling_dataset(cfg, False, announce=False)
    model = builders.build_model(cfg, rt.device, rt.memory_format).eval()
    if args.compile:
        model = torch.compile(model)
    loader = eval_loader(dataset, cfg.label_batch, collate_fn=collate, **data_loader_kwargs(args.workers, rt.device))

    try:
        if rt.dist.is_main:
            shutil.rmtree(partial, ignore_errors=True)  # leftovers of a killed pass
            partial.mkdir(parents=True)
        distributed.barrier()
        from utils.run_log import progress
        result = label_pass(model, loader, rt.device, rt.precision, rt.memory_format, cfg.num_classes,
                            args.label_ratio, args.label_stride, partial, cache_budget_bytes(args.label_cache_gb),
                            diagnostics=gt, progress=progress)
        distributed.barrier()
        if rt.dist.is_main:
            _finish(cfg, rt, dataset, result, partial, target, time.perf_counter() - start)
        distributed.barrier()
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, (OSError, RuntimeError, MemoryError)) and not isinstance(exc, UserError):
            detail = " ".join(str(exc).split()) or "no detail"
            raise UserError(f"{target}: labelling failed ({type(exc).__name__}: {detail}); removed {partial} — "
                            "check free disk space and permissions of the output folder, then rerun") from exc
        raise


def _finish(cfg: RunConfig, rt: Runtime, dataset, result: PassResult, partial: Path, target: Path,
            seconds: float) -> None:
    """Rank 0: exceptions.txt, the record, TensorBoard, the swap into place and the summary line."""
    args = cfg.args
    for c in result.missing:
        append_line(partial / "exceptions.txt",
                    f"{args.exp_name}: class {c} has no sampled pixel (label ratio {args.label_ratio})")
    files = file_manifest(partial, ".npy")
    if sorted(files) != sorted(dataset.ids):
        raise RuntimeError(f"labelling wrote {len(files)} files for {len(dataset.ids)} images")
    diagnostics = None
    if result.teacher is not None:
        diagnostics = label_quality.quality(result.kept_confusion, result.teacher)
    tb_name, phase = label_quality.series(args.exp_name, args.continue_from, args.label_phase)
    step = phase if phase is not None else 0
    record = {"key": cfg.done.key, "exp_name": args.exp_name, "images": len(dataset),
              "label_ratio": args.label_ratio, "phase": phase, "kept_fraction": result.kept_fraction,
              "thresholds": [float(t) for t in result.thresholds.cpu()], "missing_classes": result.missing,
              "precision": rt.precision.mode, "forward_passes": result.passes,
              "cache_spilled_bytes": result.spilled_bytes,
              "gt_diagnostics": diagnostics is not None, "diagnostics": diagnostics,
              "wall_s": round(seconds, 3), "images_per_s": len(dataset) / seconds if seconds > 0 else None,
              "files": files}
    write_text_atomic(partial / cfg.labeling_record.name, json.dumps(label_quality.json_safe(record), indent=2) + "\n")
    logger = RunLogger(cfg.files.tb_dir, tb_name)
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
