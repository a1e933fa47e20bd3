"""Top-1 and fine-grained accuracy of a WRN-28-2 (docs/method.md §8 "CIFAR"), and ``main_fs --state 2``.

Fine-grained accuracy = Σ max-probability over the correctly classified images / count × 100. The
model runs in eval mode, under autocast with ``--mixed-precision``; under torchrun each rank
evaluates its share of the set and the counts are summed. A ``--state 2`` test also draws the
confusion matrix of its predictions: ``<out-dir>/<exp>_confusion.png`` and TensorBoard
``test/confusion`` (under ``tb/<exp>``).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from classification.augment import eval_transform
from classification.cifar import NUM_CLASSES, labelled_dataset
from classification.models import build_backbone
from classification.run_config import RunConfig
from utils.distributed import eval_loader
from utils.checkpoint import load_model_weights, unwrap
from utils.cli import Runtime, data_loader_kwargs
from utils.cost import CostMeter
from data.synthetic import CIFAR_LABEL_NAMES
from utils.io import append_line, write_bytes_atomic
from utils.metrics import AccuracyMeter, ConfusionMatrix
from utils.run_log import RunLogger, finish_run, format_log_line
from utils.trainer import to_device


@torch.no_grad()
def evaluate(model: nn.Module, loader, rt: Runtime, confusion: ConfusionMatrix | None = None) -> dict[str, float]:
    """``{"accuracy", "fine_grained"}`` (×100) of ``model`` over ``loader`` (all ranks together);
    with ``confusion``, the predictions are also counted into it (this rank's share, not reduced)."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    meter = AccuracyMeter(rt.device)
    try:
        for images, targets in loader:
            images = to_device(images, rt.device, rt.memory_format)
            targets = targets.to(rt.device, non_blocking=True)
            with rt.precision.autocast():
                logits = model(images)
            meter.update(logits, targets)
            if confusion is not None:
                confusion.update(targets, logits.argmax(dim=1))
    finally:
        model.train(was_training)
    return meter.all_reduce().compute()


def confusion_figure(matrix: np.ndarray, names: Sequence[str], title: str):
    """A matplotlib (Agg) figure of a confusion matrix (rows = true class, columns = predicted): cells
    coloured by the row-normalised fraction, annotated with the counts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 1.0 + 0.55 * n), constrained_layout=True)
    ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(int(count)), ha="center", va="center", fontsize=7,
                color="white" if fractions[i, j] > 0.5 else "black")
    return fig


def save_confusion(cfg: RunConfig, matrix: np.ndarray, title: str) -> Path:
    """The confusion figure as a PNG beside the run's outputs (atomically) and in TensorBoard
    (``test/confusion`` under ``tb/<exp>``)."""
    fig = confusion_figure(matrix, CIFAR_LABEL_NAMES[:len(matrix)], title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    path = cfg.files.confusion
    write_bytes_atomic(path, buffer.getvalue())
    logger = RunLogger(cfg.files.tb_dir, cfg.args.exp_name)
    logger.figure("test/confusion", fig, 0)
    logger.close()
    return path


def evaluation_loader(cfg: RunConfig, rt: Runtime):
    """This rank's share of the validation set (``valtiny_seed1`` with --valtiny, else ``test``)."""
    dataset = labelled_dataset(cfg.args.data_root, cfg.val_set, eval_transform())
    return eval_loader(dataset, cfg.eval_batch, **data_loader_kwargs(min(cfg.args.workers, 2), rt.device))


def load_wrn(path: str | os.PathLike, rt: Runtime, backbone: str = "wrn-28-2") -> nn.Module:
    """The ``backbone`` network (``--backbone``, WRN-28-2 by default) with the weights of ``path``
    (a snapshot, an EMA file or a bare state_dict)."""
    model = build_backbone(backbone)
    load_model_weights(model, path)
    return model.to(device=rt.device, memory_format=rt.memory_format)


def run_test(cfg: RunConfig, rt: Runtime) -> float:
    """``main_fs --state 2``: test ``--continue-from`` and append the result to ``<log>.txt``.

    A named run (``--exp-name``) is recorded with :func:`finish_run` (so a rerun skips it); the
    default name appends a ``test: <value>`` line every time, as the original did.
    """
    args, set_name = cfg.args, cfg.val_set
    cost = CostMeter(rt.device)
    model = load_wrn(args.continue_from, rt, args.backbone)
    loader = evaluation_loader(cfg, rt)
    confusion = ConfusionMatrix(NUM_CLASSES, rt.device)
    metrics = evaluate(model, loader, rt, confusion)
    matrix = confusion.all_reduce().matrix.cpu().numpy()
    cost.add(len(loader.sampler))
    value = metrics[cfg.metric]
    if rt.dist.is_main:
        files = cfg.files
        save_confusion(cfg, matrix, f"{args.exp_name}: {set_name}, accuracy {metrics['accuracy']:.2f}")
        fields = {"accuracy": metrics["accuracy"], "fine_grained": metrics["fine_grained"], "set": set_name,
                  "metric": cfg.metric, "checkpoint": os.fspath(args.continue_from),
                  **cost.fields()}
        if args.named:
            finish_run(files.out_dir, files.log_file, args.exp_name, value, **fields)
        else:
            append_line(files.log_file, format_log_line(args.exp_name, value, **fields))
        what = "fine-grained accuracy" if args.fine_grain else "accuracy"
        print(f"{args.exp_name}: {what} on {set_name} {value:.4f} ({args.continue_from})", flush=True)
    return value
