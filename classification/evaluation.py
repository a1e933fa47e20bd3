"""Top-1 and fine-grained accuracy of a WRN-28-2 (SPEC §8 "CIFAR"), and ``main_fs --state 2``.

Fine-grained accuracy = Σ max-probability over the correctly classified images / count × 100. The
model runs in eval mode, under autocast with ``--mixed-precision``; under torchrun each rank
evaluates its share of the set and the counts are summed.
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from classification import options
from classification.augment import eval_transform
from classification.cifar import labelled_dataset
from classification.models import wrn_28_2
from utils.batches import eval_loader
from utils.checkpoint import load_model_weights, unwrap
from utils.cli import Runtime, data_loader_kwargs
from utils.cost import CostMeter
from utils.io import append_line
from utils.metrics import AccuracyMeter
from utils.run_log import finish_run, format_log_line


@torch.no_grad()
def evaluate(model: nn.Module, loader, rt: Runtime) -> dict[str, float]:
    """``{"accuracy", "fine_grained"}`` (×100) of ``model`` over ``loader`` (all ranks together)."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    meter = AccuracyMeter(rt.device)
    try:
        for images, targets in loader:
            images = images.to(rt.device, non_blocking=True).contiguous(memory_format=rt.memory_format)
            with rt.precision.autocast():
                logits = model(images)
            meter.update(logits, targets.to(rt.device, non_blocking=True))
    finally:
        model.train(was_training)
    return meter.all_reduce().compute()


def evaluation_loader(args: argparse.Namespace, rt: Runtime, set_name: str | None = None):
    """This rank's share of the validation set (``valtiny_seed1`` with --valtiny, else ``test``)."""
    dataset = labelled_dataset(args.data_root, set_name or options.val_set_name(args), eval_transform())
    batch = max(1, args.eval_batch_size // rt.dist.world_size)
    return eval_loader(dataset, batch, **data_loader_kwargs(min(args.workers, 2), rt.device))


def load_wrn(path: str | os.PathLike, rt: Runtime) -> nn.Module:
    """A WRN-28-2 with the weights of ``path`` (a snapshot, an EMA file or a bare state_dict)."""
    model = wrn_28_2()
    load_model_weights(model, path)
    return model.to(device=rt.device, memory_format=rt.memory_format)


def run_test(args: argparse.Namespace, rt: Runtime) -> float:
    """``main_fs --state 2``: test ``--continue-from`` and append the result to ``<log>.txt``.

    A named run (``--exp-name``) is recorded with :func:`finish_run` (so a rerun skips it); the
    default name appends a ``test: <value>`` line every time, as the original did.
    """
    cost = CostMeter(rt.device)
    model = load_wrn(args.continue_from, rt)
    set_name = options.val_set_name(args)
    loader = evaluation_loader(args, rt, set_name)
    metrics = evaluate(model, loader, rt)
    cost.add(len(loader.sampler))
    value = metrics[options.metric_name(args)]
    if rt.dist.is_main:
        files = options.run_files(args)
        fields = {"accuracy": metrics["accuracy"], "fine_grained": metrics["fine_grained"], "set": set_name,
                  "checkpoint": os.fspath(args.continue_from), **cost.fields()}
        if args.named:
            finish_run(files.out_dir, files.log_file, args.exp_name, value, **fields)
        else:
            append_line(files.log_file, format_log_line(args.exp_name, value, **fields))
        what = "fine-grained accuracy" if args.fine_grain else "accuracy"
        print(f"{args.exp_name}: {what} on {set_name} {value:.4f} ({args.continue_from})", flush=True)
    return value
