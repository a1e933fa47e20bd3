"""DMT semantic segmentation, one program for every step (flags: :mod:`segmentation.options`, docs/method.md §9.1).

    python -m segmentation.main --state 2 ...              # supervised training on the labelled split
    python -m segmentation.main --state 1 --labeling ...   # CBC pseudo-labelling with --continue-from
    python -m segmentation.main --state 1 ...              # DMT training on [pseudo; labelled] batches
    python -m segmentation.main --state 3 ...              # test --continue-from (--eval-protocol)

A training or test run whose ``<out-dir>/<exp>.done.json`` exists is skipped ("already finished"),
as is a labelling pass whose pseudo folder is complete; an interrupted training run resumes from
``<out-dir>/<exp>.resume.pt``. Under torchrun the batch flags are global batches.

Before any work: flag values are checked, the output folders must be writable, and every image and
label the run reads is checked from its header (:mod:`utils.data_check`; ``--no-check-data`` skips
it), so bad input ends the run at once with one line (exit 2).
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

from segmentation import run_state
from segmentation.options import parse_args
from utils.errors import UserError, run_cli


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


def check_output_folders(args: argparse.Namespace) -> None:
    """Every folder the run writes to must be writable, checked before any work starts."""
    from utils.io import require_writable_dir

    require_writable_dir(args.out_dir, "--out-dir")
    if args.log_dir:
        require_writable_dir(args.log_dir, "--log-dir")
    if args.labeling:  # the pass writes <pseudo-dir>.partial beside the folder, then renames it
        require_writable_dir(run_state.pseudo_dir(args).parent, "--pseudo-dir (its parent folder)")


def data_items(args: argparse.Namespace) -> tuple[list, tuple[str, ...]]:
    """The (image, label) files this run reads, and the expected image format(s)."""
    from segmentation import builders
    from utils.data_check import items_for

    sets: list[tuple[object, bool]] = []  # (dataset, with labels)
    if args.labeling:
        sets.append((builders.labeling_set(args), False))
    elif args.state == 3:
        sets.append((builders.evaluation_set(args), True))
    else:
        sets.append((builders.training_set(args, builders.labelled_list(args)), True))
        if args.state == 1:  # images of the pseudo set (their label files are checked when loaded)
            sets.append((builders.training_set(args, builders.unlabelled_list(args)), False))
        sets.append((builders.evaluation_set(args), True))
    items: dict = {}
    for dataset, labels in sets:
        for item in items_for(dataset.ids, dataset.image_path, dataset.label_path if labels else None):
            if item.label is not None or item.image not in items:
                items[item.image] = item
    return list(items.values()), (("JPEG",) if args.dataset == "voc" else ("PNG",))


def check_data(args: argparse.Namespace) -> None:
    """Every listed image and label, from its header, before training/labelling/testing begins."""
    from utils.data_check import check_items

    items, formats = data_items(args)
    check_items(items, what=f"{args.dataset} images", image_formats=formats)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    check_args(args)
    if args.labeling:
        if run_state.labeling_done(args):
            print(f"{args.exp_name}: already labelled ({run_state.pseudo_dir(args)} is complete); skipping", flush=True)
            return
    elif run_state.skip_if_finished(args):
        return
    check_output_folders(args)
    if not args.no_check_data:
        check_data(args)

    from utils import distributed
    from utils.cli import setup_runtime
    rt = setup_runtime(args)
    try:
        if args.labeling:
            from segmentation.labeling import run_labeling
            run_labeling(args, rt)
        elif args.state == 3:
            from segmentation.evaluation import run_test
            run_test(args, rt)
        else:
            from segmentation.training import run_training
            run_training(args, rt)
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(run_cli(main))
