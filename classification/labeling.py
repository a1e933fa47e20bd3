"""Global-curriculum pseudo-labelling of CIFAR-10 (docs/method.md §2.2): ``main_dmt --labeling``.

The labeller (``--continue-from``) runs in eval mode over ``<train-set>_unlabeled`` with the test
transform, batch ``--batch-size-labeled`` (64 by default), in fp32 unless ``--mixed-precision``.
With the N max-probabilities sorted ascending as P, the threshold is k = 0 for r ≥ 1, else
k = P[int(−r·N + 1)] (:func:`utils.pseudo_labels.global_confidence_threshold`), and the images whose
max probability is **strictly** above k are kept (r·N − 2 of them without ties, docs/method.md §11.11).

Output: the pickle ``<pseudo-dir>/<train-set>_pseudo`` = {data: uint8 (N', 3072) raw rows,
labels: float32 (N', 10) softmax}, rows in the unlabelled file's order, and beside it
``<train-set>_pseudo.json``, a record of what was labelled (and the pickle's size and modification
time); a rerun with the same labeller file, data, split and ratio whose pickle is the recorded one
skips the pass. Under torchrun every rank labels its share, the confidences of all ranks are
pooled before k is chosen, and rank 0 writes.

Pseudo-label quality (:mod:`utils.label_quality`, docs/method.md §2.2): unless
``--no-gt-diagnostics``, the true labels the unlabelled file carries (every split file has them;
without them a one-line note turns this off) are compared, after k is chosen, with the kept images'
labels — accuracy and per-class precision / recall of the kept images, the teacher's accuracy on all
of them — into the record's ``"diagnostics"``, TensorBoard (``labeling/...``, stepped by phase) and
the phase's ``log.txt`` line. The pickle is the same with or without it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from classification.augment import eval_transform
from classification import options
from classification.cifar import (SPLITS_HINT, CifarDataset, _check_rows, _load_pickle_dict, check_class_labels,
                                  rows_to_images, write_pseudo)
from classification.evaluation import load_wrn
from classification.run_config import RunConfig
from utils import distributed, label_quality
from utils.distributed import eval_loader
from utils.cli import Runtime, data_loader_kwargs
from utils.errors import UserError
from utils.io import write_text_atomic
from utils.metrics import ConfusionMatrix
from utils.pseudo_labels import IGNORE_INDEX, global_confidence_threshold
from utils.run_files import single_file_manifest
from utils.run_log import RunLogger
from utils.trainer import to_device


def unlabelled_with_truth(path: Path) -> tuple[CifarDataset, np.ndarray, np.ndarray | None]:
    """(dataset of (image, index), raw rows, true labels or None) of ``<train-set>_unlabeled``."""
    entry = _load_pickle_dict(path, SPLITS_HINT)
    if "data" not in entry:
        raise UserError(f"{path}: missing key 'data' (has {sorted(entry)}); {SPLITS_HINT}")
    rows = _check_rows(path, entry["data"], SPLITS_HINT)
    labels = entry.get("labels")
    truth = None if labels is None else check_class_labels(path, labels, len(rows))
    return CifarDataset(rows_to_images(rows), None, eval_transform()), rows, truth


@torch.no_grad()
def predict(model: nn.Module, loader, rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample indices, float32 softmax (n, C)) of this rank's share, in eval mode."""
    model.eval()
    indices, probs = [], []
    for images, index in loader:
        images = to_device(images, rt.device, rt.memory_format)
        with rt.precision.autocast():
            logits = model(images)
        probs.append(logits.float().softmax(dim=1))
        indices.append(index.to(rt.device, non_blocking=True))
    if not probs:
        return torch.zeros(0, dtype=torch.long, device=rt.device), torch.zeros(0, 10, device=rt.device)
    return torch.cat(indices), torch.cat(probs)


def pooled_in_file_order(indices: torch.Tensor, probs: torch.Tensor, count: int) -> torch.Tensor:
    """The softmax rows of every rank, ordered by sample index (the unlabelled file's order)."""
    indices, probs = distributed.all_gather_cat(indices), distributed.all_gather_cat(probs)
    if indices.numel() != count:
        raise RuntimeError(f"labelling covered {indices.numel()} of {count} images")
    return probs[torch.argsort(indices)]


def run_labeling(cfg: RunConfig, rt: Runtime) -> int:
    """Label ``<train-set>_unlabeled`` and write the pseudo pickle; returns the number of images kept."""
    args, unlabelled = cfg.args, cfg.unlabelled_file
    start = time.perf_counter()
    dataset, rows, truth = unlabelled_with_truth(unlabelled)
    if len(dataset) == 0:
        raise UserError(f"{unlabelled}: no images to label; regenerate the splits")
    options.check_label_ratio(args.label_ratio, len(dataset), unlabelled)
    if truth is None and not args.no_gt_diagnostics and rt.dist.is_main:
        print(f"note: {unlabelled} has no labels; "
              "pseudo-label diagnostics are off (--no-gt-diagnostics silences this)", file=sys.stderr, flush=True)
    model = load_wrn(args.continue_from, rt, args.backbone)
    loader = eval_loader(dataset, cfg.label_batch, **data_loader_kwargs(args.workers, rt.device))
    probs = pooled_in_file_order(*predict(model, loader, rt), len(dataset))
    confidences = probs.max(dim=1).values
    threshold = global_confidence_threshold(confidences, args.label_ratio)
    keep_device = confidences > threshold
    keep = keep_device.cpu().numpy()
    kept = int(keep.sum())
    if rt.dist.is_main:
        diagnostics = None
        if truth is not None and not args.no_gt_diagnostics:  # read after k is chosen, for the record only
            diagnostics = quality(probs, keep_device, torch.from_numpy(truth).to(probs.device))
        path = cfg.pseudo_file
        write_pseudo(path, rows[keep], probs[keep_device].cpu().numpy())
        tb_name, phase = label_quality.series(args.exp_name, args.continue_from, args.label_phase)
        record = {"key": cfg.done.key, "kept": kept, "total": len(dataset), "threshold": float(threshold),
                  "pseudo_file": os.fspath(path), "files": single_file_manifest(path),
                  "label_ratio": args.label_ratio, "kept_fraction": kept / len(dataset), "phase": phase,
                  "gt_diagnostics": diagnostics is not None, "diagnostics": diagnostics}
        write_text_atomic(cfg.pseudo_record, json.dumps(label_quality.json_safe(record), indent=2) + "\n")
        logger = RunLogger(cfg.files.tb_dir, tb_name)
        try:
            label_quality.log_scalars(logger, record, phase if phase is not None else 0)
        finally:
            logger.close()
        quality_text = "" if diagnostics is None else (
            f"; kept images {diagnostics['accuracy']:.2f}% right (teacher {diagnostics['teacher_accuracy']:.2f}% "
            "on all)" if diagnostics["accuracy"] is not None else "")
        print(f"labelled {len(dataset)} images with {args.continue_from} (ratio {args.label_ratio}): "
              f"threshold {float(threshold):.6f}, kept {kept} ({kept / len(dataset):.2%}) -> {path} "
              f"in {time.perf_counter() - start:.1f}s{quality_text}", flush=True)
    distributed.barrier()
    return kept


def quality(probs: torch.Tensor, keep: torch.Tensor, truth: torch.Tensor) -> dict:
    """:func:`utils.label_quality.quality` of the kept images' labels (argmax) against ``truth``."""
    label = probs.argmax(dim=1)
    teacher = ConfusionMatrix(probs.shape[1], probs.device)
    teacher.update(truth, label)
    kept = ConfusionMatrix(probs.shape[1], probs.device)
    kept.update(truth, torch.where(keep, label, torch.full_like(label, IGNORE_INDEX)))
    return label_quality.quality(kept.matrix, teacher.matrix)
