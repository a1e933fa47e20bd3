"""DMT semantic segmentation, one program for every step (flags: :mod:`segmentation.options`, docs/method.md §9.1).

    python -m segmentation.main --state 2 ...              # supervised training on the labelled split
    python -m segmentation.main --state 1 --labeling ...   # CBC pseudo-labelling with --continue-from
    python -m segmentation.main --state 1 ...              # DMT training on [pseudo; labelled] batches
    python -m segmentation.main --state 3 ...              # test --continue-from (--eval-protocol)

The flags are checked (:func:`check_args`) and turned into the run's configuration
(:class:`segmentation.run_config.RunConfig`: the task, sizes, list names, paths, protocol, batch
sizes), and :func:`utils.program.run_program` does the rest as for every program: a training or
test run whose ``<out-dir>/<exp>.done.json`` exists is skipped ("already finished"), as is a labelling
pass whose pseudo folder is complete; the output folders must be writable, and every image and label
the run reads is checked from its header (:func:`check_data`, :mod:`utils.data_check`;
``--no-check-data`` skips it), so bad input ends the run at once with one line (exit 2); then the
task's function runs (``TASKS``). An interrupted training run resumes from
``<out-dir>/<exp>.resume.pt``. Under torchrun the batch flags are global batches.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

from segmentation.options import parse_args
from segmentation.run_config import TASKS, RunConfig
from utils.errors import UserError, run_cli
from utils.program import run_program


def check_args(args: argparse.Namespace) -> None:
    """Flag values and combinations that cannot work, as one-line errors before anything is loaded."""
    from utils.cli import check_number, check_runtime_args

    if args.labeling and args.state != 1:
        raise UserError(f"--labeling with --state {args.state}: labelling is --state 1 --labeling")
    if (args.labeling or args.state == 3) and not args.continue_from:
        raise UserError("--continue-from is required to label (--labeling) or to test (--state 3); "
                        "pass the snapshot of the model to use")
    if args.state != 1 and args.loss != "dmt":
        raise UserError(f"--loss {args.loss} applies to DMT training (--state 1) only")
    for flag, value in (("--epochs", args.epochs), ("--batch-size-labeled", args.batch_size_labeled),
                        ("--batch-size-pseudo", args.batch_size_pseudo), ("--val-num-steps", args.val_num_steps),
                        ("--label-stride", args.label_stride)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    check_number("--lr", args.lr, low=0, low_open=True, hint="the original's VOC rate is 0.002")
    check_number("--weight-decay", args.weight_decay, low=0)
    check_number("--label-ratio", args.label_ratio, low=0, low_open=True,
                 hint="the CBC ratio r, the kept fraction of pixels per class; 1 keeps every sampled class")
    check_number("--gamma1", args.gamma1, low=0)
    check_number("--gamma2", args.gamma2, low=0)
    check_number("--online-threshold", args.online_threshold, low=0, high=1)
    check_number("--sets-id", args.sets_id, low=0)
    check_number("--resume-every", args.resume_every, low=0, hint="0 = only after validations and at the end")
    check_runtime_args(args)
    if any(not (math.isfinite(s) and s > 0) for s in args.eval_scales):
        raise UserError(f"--eval-scales {' '.join(map(str, args.eval_scales))}: scales must be finite and > 0")
    for flag, size in (("--crop-size", args.crop_size), ("--test-size", args.test_size),
                       ("--eval-crop", args.eval_crop), ("--eval-stride", args.eval_stride)):
        if size is not None and min(size) < 1:
            raise UserError(f"{flag} {size[0]} {size[1]}: sizes must be positive")


def data_items(cfg: RunConfig) -> list:
    """The (image, label) files this run reads."""
    from segmentation import builders
    from utils.data_check import items_for

    sets: list[tuple[object, bool]] = []  # (dataset, with labels)
    if cfg.task == "labeling":
        sets.append((builders.labeling_set(cfg), False))
    elif cfg.task == "test":
        sets.append((builders.evaluation_set(cfg), True))
    else:
        sets.append((builders.training_set(cfg, cfg.labelled_list), True))
        if cfg.task == "dmt":  # images of the pseudo set (their label files are checked when loaded)
            sets.append((builders.training_set(cfg, cfg.unlabelled_list), False))
        sets.append((builders.evaluation_set(cfg), True))
    items: dict = {}
    for dataset, labels in sets:
        for item in items_for(dataset.ids, dataset.image_path, dataset.label_path if labels else None):
            if item.label is not None or item.image not in items:
                items[item.image] = item
    return list(items.values())


def check_data(cfg: RunConfig) -> None:
    """Every listed image and label, from its header, before training/labelling/testing begins."""
    from utils.data_check import check_items

    check_items(data_items(cfg), what=f"{cfg.args.dataset} images", image_formats=(cfg.image_format,))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    check_args(args)
    config = RunConfig.from_args(args)
    run_program(config, TASKS, check_data)


if __name__ == "__main__":
    sys.exit(run_cli(main))
