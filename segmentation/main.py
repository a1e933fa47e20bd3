"""DMT semantic segmentation, one program for every step (flags: :mod:`segmentation.options`, SPEC §9.1).

    python -m segmentation.main --state 2 ...              # supervised training on the labelled split
    python -m segmentation.main --state 1 --labeling ...   # CBC pseudo-labelling with --continue-from
    python -m segmentation.main --state 1 ...              # DMT training on [pseudo; labelled] batches
    python -m segmentation.main --state 3 ...              # test --continue-from (--eval-protocol)

A training or test run whose ``<out-dir>/<exp>.done.json`` exists is skipped ("already finished"),
as is a labelling pass whose pseudo folder is complete; an interrupted training run resumes from
``<out-dir>/<exp>.resume.pt``. Under torchrun the batch flags are global batches.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from segmentation import run_state
from segmentation.options import parse_args
from utils.errors import UserError, run_cli


def check_args(args: argparse.Namespace) -> None:
    """Flag combinations that cannot work, as one-line errors before anything is loaded."""
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
    if not args.label_ratio > 0:
        raise UserError(f"--label-ratio {args.label_ratio}: must be > 0 (1 keeps every sampled class)")
    if any(not s > 0 for s in args.eval_scales):
        raise UserError(f"--eval-scales {args.eval_scales}: scales must be > 0")
    for flag, size in (("--crop-size", args.crop_size), ("--test-size", args.test_size),
                       ("--eval-crop", args.eval_crop), ("--eval-stride", args.eval_stride)):
        if size is not None and min(size) < 1:
            raise UserError(f"{flag} {size[0]} {size[1]}: sizes must be positive")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    check_args(args)
    if args.labeling:
        if run_state.labeling_done(args):
            print(f"{args.exp_name}: already labelled ({run_state.pseudo_dir(args)} is complete); skipping", flush=True)
            return
    elif run_state.skip_if_finished(args):
        return

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
