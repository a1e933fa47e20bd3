"""Global-curriculum pseudo-labelling of CIFAR-10 (SPEC §2.2): ``main_dmt --labeling``.

The labeller (``--continue-from``) runs in eval mode over ``<train-set>_unlabeled`` with the test
transform, batch ``--batch-size-labeled`` (64 by default), in fp32 unless ``--mixed-precision``.
With the N max-probabilities sorted ascending as P, the threshold is k = 0 for r ≥ 1, else
k = P[int(−r·N + 1)] (:func:`utils.pseudo_labels.global_confidence_threshold`), and the images whose
max probability is **strictly** above k are kept (r·N − 2 of them without ties, SPEC §11.11).

Output: the pickle ``<pseudo-dir>/<train-set>_pseudo`` = {data: uint8 (N', 3072) raw rows,
labels: float32 (N', 10) softmax}, rows in the unlabelled file's order, and beside it
``<train-set>_pseudo.json``, a record of what was labelled; a rerun with the same labeller file,
data, split and ratio finds the record and skips the pass. Under torchrun every rank labels its
share, the confidences of all ranks are pooled before k is chosen, and rank 0 writes.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

from classification.augment import eval_transform
from classification.cifar import cifar_folder, pseudo_set_name, unlabelled_dataset, write_pseudo
from classification.evaluation import load_wrn
from utils import distributed
from utils.batches import eval_loader
from utils.cli import Runtime, data_loader_kwargs
from utils.errors import UserError
from utils.io import write_text_atomic
from utils.pseudo_labels import global_confidence_threshold
from utils.run_files import file_identity


def pseudo_path(args: argparse.Namespace) -> Path:
    """``<pseudo-dir>/<train-set>_pseudo``; the pseudo dir defaults to cifar-10-batches-py (the original's)."""
    folder = Path(args.pseudo_dir) if args.pseudo_dir else cifar_folder(args.data_root)
    return folder / pseudo_set_name(args.train_set)


def record_path(args: argparse.Namespace) -> Path:
    path = pseudo_path(args)
    return path.with_name(path.name + ".json")


def labeling_key(args: argparse.Namespace) -> dict:
    """Everything that determines the pseudo file's content."""
    return {"labeller": file_identity(args.continue_from),
            "unlabelled": file_identity(cifar_folder(args.data_root) / f"{args.train_set}_unlabeled"),
            "label_ratio": args.label_ratio, "mixed_precision": args.mixed_precision,
            "amp_dtype": args.amp_dtype if args.mixed_precision else None}


def labeling_done(args: argparse.Namespace) -> bool:
    path = record_path(args)
    if not (path.is_file() and pseudo_path(args).is_file()):
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("key") == labeling_key(args)
    except (OSError, ValueError):
        return False


@torch.no_grad()
def predict(model: nn.Module, loader, rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample indices, float32 softmax (n, C)) of this rank's share, in eval mode."""
    model.eval()
    indices, probs = [], []
    for images, index in loader:
        images = images.to(rt.device, non_blocking=True).contiguous(memory_format=rt.memory_format)
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


def run_labeling(args: argparse.Namespace, rt: Runtime) -> int:
    """Label ``<train-set>_unlabeled`` and write the pseudo pickle; returns the number of images kept."""
    start = time.perf_counter()
    dataset, rows = unlabelled_dataset(args.data_root, f"{args.train_set}_unlabeled", eval_transform())
    if len(dataset) == 0:
        raise UserError(f"{cifar_folder(args.data_root) / (args.train_set + '_unlabeled')}: no images to label; "
                        "regenerate the splits")
    model = load_wrn(args.continue_from, rt)
    batch = max(1, args.batch_size_labeled // rt.dist.world_size)
    loader = eval_loader(dataset, batch, **data_loader_kwargs(args.workers, rt.device))
    probs = pooled_in_file_order(*predict(model, loader, rt), len(dataset))
    confidences = probs.max(dim=1).values
    threshold = global_confidence_threshold(confidences, args.label_ratio)
    keep = (confidences > threshold).cpu().numpy()
    kept = int(keep.sum())
    if rt.dist.is_main:
        path = pseudo_path(args)
        write_pseudo(path, rows[keep], probs[torch.from_numpy(keep).to(probs.device)].cpu().numpy())
        record = {"key": labeling_key(args), "kept": kept, "total": len(dataset), "threshold": float(threshold),
                  "pseudo_file": os.fspath(path)}
        write_text_atomic(record_path(args), json.dumps(record, indent=2) + "\n")
        print(f"labelled {len(dataset)} images with {args.continue_from} (ratio {args.label_ratio}): "
              f"threshold {float(threshold):.6f}, kept {kept} ({kept / len(dataset):.2%}) -> {path} "
              f"in {time.perf_counter() - start:.1f}s", flush=True)
    distributed.barrier()
    return kept
