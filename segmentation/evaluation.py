"""Segmentation evaluation: class probabilities under three test protocols, and the val loop (docs/method.md §8).

Protocols (``--eval-protocol``), all on the test-preprocessed batch (VOC padded to 505×505, City
resized to 512×1024), all returning softmax probabilities at the batch's size:

* ``whole`` — the paper's: one forward of the whole image, logits upsampled bilinearly
  (align_corners=True) to the image size, softmax (docs/method.md §8).
* ``sliding`` — windows of ``--eval-crop`` at ``--eval-stride`` (the last window of a row/column is
  aligned to the border); each window's probabilities are computed as in ``whole`` and averaged
  over the windows covering a pixel.
* ``msf`` — multi-scale + flip: the image resized by each of ``--eval-scales`` (bilinear,
  align_corners=False, no antialias, as the training RandomScale), and (unless ``--eval-no-flip``)
  also mirrored; each pass's logits are mirrored back, upsampled to the image size and soft-maxed;
  the probabilities are averaged over all passes.

:func:`evaluate` accumulates a confusion matrix on the device over this rank's share of the set,
sums it over torchrun ranks and reads it back once: ``{"miou", "pixel_acc"}`` (×100).
:func:`evaluate_with_samples` also keeps the first few images of the set with their ground truth and
prediction (no extra forward); :func:`segmentation.palette.picture_strips` draws them in the VOC / Cityscapes palette.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segmentation import builders
from segmentation.datasets import collate
from segmentation.run_config import Protocol, RunConfig
from utils.distributed import eval_loader
from utils.cli import Runtime, data_loader_kwargs
from utils.cost import CostMeter
from utils.metrics import ConfusionMatrix
from utils.run_log import finish_run
from utils.trainer import to_device

PROTOCOLS = ("whole", "sliding", "msf")


def upsampled_probabilities(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Logits (any resolution) → float32 softmax at ``size``, upsampled bilinearly with align_corners=True."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)
    return logits.softmax(dim=1)


def probabilities_whole(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return upsampled_probabilities(model(images), images.shape[-2:])


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: every ``stride`` from 0, plus one aligned to the far border."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def probabilities_sliding(model: nn.Module, images: torch.Tensor, window: Sequence[int],
                          stride: Sequence[int]) -> torch.Tensor:
    h, w = images.shape[-2:]
    wh, ww = min(window[0], h), min(window[1], w)
    total: torch.Tensor | None = None
    count = images.new_zeros((h, w), dtype=torch.float32)
    for top in window_starts(h, wh, stride[0]):
        for left in window_starts(w, ww, stride[1]):
            probs = probabilities_whole(model, images[..., top:top + wh, left:left + ww])
            if total is None:
                total = probs.new_zeros(probs.shape[:2] + (h, w))
            total[..., top:top + wh, left:left + ww] += probs
            count[top:top + wh, left:left + ww] += 1
    assert total is not None
    return total / count


def probabilities_msf(model: nn.Module, images: torch.Tensor, scales: Iterable[float],
                      flip: bool = True) -> torch.Tensor:
    size = images.shape[-2:]
    total: torch.Tensor | None = None
    passes = 0
    for scale in scales:
        scaled = images
        if scale != 1.0:
            scaled_size = [max(1, int(round(scale * n))) for n in size]
            scaled = F.interpolate(images, size=scaled_size, mode="bilinear", align_corners=False, antialias=False)
        variants = [(scaled, False)] + ([(scaled.flip(-1), True)] if flip else [])
        for batch, mirrored in variants:
            logits = model(batch)
            if mirrored:
                logits = logits.flip(-1)
            probs = upsampled_probabilities(logits, size)
            total = probs if total is None else total + probs
            passes += 1
    if total is None:
        raise ValueError("msf needs at least one scale")
    return total / passes


def probabilities(model: nn.Module, images: torch.Tensor, protocol: Protocol) -> torch.Tensor:
    """N×C×H×W softmax probabilities of ``images`` under ``protocol``."""
    if protocol.name == "whole":
        return probabilities_whole(model, images)
    if protocol.name == "sliding":
        return probabilities_sliding(model, images, protocol.window, protocol.stride)
    if protocol.name == "msf":
        return probabilities_msf(model, images, protocol.scales, protocol.flip)
    raise ValueError(f"unknown protocol {protocol.name!r}; choose one of {PROTOCOLS}")


Samples = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (images N×3×H×W normalised, labels N×H×W, predictions N×H×W)


@torch.no_grad()
def evaluate_with_samples(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device, precision,
                          protocol: Protocol = Protocol(),
                          memory_format: torch.memory_format = torch.contiguous_format,
                          keep: int = 0) -> tuple[dict[str, float], Samples | None]:
    """:func:`evaluate`, and the first ``keep`` images of ``loader`` with their labels and
    predictions (on the CPU, read back with the metrics; None for ``keep=0``) — the batches already
    evaluated, no extra forward."""
    matrix = ConfusionMatrix(num_classes, device)
    kept: list[Samples] = []
    need = keep
    for images, labels in loader:
        images = to_device(images, device, memory_format)
        labels = labels.to(device, non_blocking=True)
        with precision.autocast():
            probs = probabilities(model, images, protocol)
        prediction = probs.argmax(dim=1)
        matrix.update(labels, prediction)
        if need > 0:
            kept.append((images[:need], labels[:need], prediction[:need]))
            need -= kept[-1][0].shape[0]
    result = matrix.all_reduce().compute()
    samples = None
    if kept:
        samples = tuple(torch.cat([k[i].float() if i == 0 else k[i] for k in kept]).cpu() for i in range(3))
    return {"miou": result["miou"], "pixel_acc": result["pixel_acc"]}, samples


def evaluate(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device, precision,
             protocol: Protocol = Protocol(),
             memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, float]:
    """mIoU and pixel accuracy (×100) of ``model`` (put in eval mode by the caller) over ``loader``'s
    ``(images, labels)`` batches, summed over torchrun ranks (docs/method.md §8)."""
    return evaluate_with_samples(model, loader, num_classes, device, precision, protocol, memory_format)[0]


def run_test(cfg: RunConfig, rt: Runtime) -> dict[str, float]:
    """``--state 3``: evaluate ``--continue-from`` on val (valtiny) with ``--eval-protocol``; the
    result goes to log.txt as ``<exp>: <mIoU> | pixel_acc=... | protocol=... | <cost>``."""
    args, protocol = cfg.args, cfg.protocol
    dataset = builders.evaluation_set(cfg)
    loader = eval_loader(dataset, cfg.val_batch, collate_fn=collate, **data_loader_kwargs(args.workers, rt.device))
    model = builders.build_model(cfg, rt.device, rt.memory_format).eval()
    cost = CostMeter(rt.device)
    metrics = evaluate(model, loader, cfg.num_classes, rt.device, rt.precision, protocol, rt.memory_format)
    cost.add(len(dataset) // rt.dist.world_size)
    if rt.dist.is_main:
        finish_run(cfg.files.out_dir, cfg.files.log_file, args.exp_name, metrics["miou"],
                   pixel_acc=metrics["pixel_acc"], protocol=protocol.describe(), val=cfg.val_list,
                   weights=args.continue_from, **cost.fields())
        print(f"{args.exp_name}: {cfg.val_list} mIoU {metrics['miou']:.2f}, pixel accuracy "
              f"{metrics['pixel_acc']:.2f} ({protocol.describe()})", flush=True)
    return metrics
