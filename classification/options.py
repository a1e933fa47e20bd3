"""Command-line flags of ``classification.main_fs`` (docs/method.md §9.3) and ``classification.main_dmt`` (§9.2).

The original programs' flags keep their names, defaults and meaning; flags marked "new" are
additions. Batch-size flags are global batches (split across torchrun processes). Parsing does not
import torch, so a finished run is recognised and skipped in a fraction of a second.
"""
from __future__ import annotations

import argparse
import time
from typing import Sequence

from classification.run_config import BACKBONES, VALTINY_SET
from utils.cli import ArgumentParser, add_label_quality_args, add_runtime_args
from utils.errors import UserError

DEFAULT_DATA_ROOT = "datasets/cifar10"
AUTO = "auto"


def _add_shared(p: argparse.ArgumentParser, *, n: int, m: int, alpha: float | None, epochs: int,
                train_set: str, train_set_help: str, workers: int) -> None:
    """The flags both programs have (docs/method.md §9.3 "shared with main_dmt.py") plus the new ones."""
    p.add_argument("--exp-name", default=AUTO, help="run name (default auto: unix time; --state 2: 'test')")
    p.add_argument("--dataset", choices=["cifar10"], default="cifar10")
    p.add_argument("--val-num-steps", type=int, default=1000, help="validate every this many iterations")
    p.add_argument("--n", type=int, default=n, help=f"RandAugment: ops per image (default {n})")
    p.add_argument("--m", type=int, default=m, help=f"RandAugment: largest magnitude, m ~ U{{1..M}} (default {m})")
    p.add_argument("--alpha", type=float, default=alpha,
                   help="mixup Beta(alpha, alpha) " + ("(default: no mixup)" if alpha is None else
                                                       f"(default {alpha}; -1 = no mixup)"))
    p.add_argument("--lr", type=float, default=0.2, help="initial learning rate (cosine to 0 per iteration)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--train-set", default=train_set, help=train_set_help)
    p.add_argument("--do-not-save", action="store_true",
                   help="delete the snapshot and EMA checkpoints at the end instead of keeping them")
    p.add_argument("--valtiny", action="store_true", help=f"validate on {VALTINY_SET} (default: the test set)")
    p.add_argument("--fine-grain", action="store_true",
                   help="validate with fine-grained accuracy (a correct image counts its max probability)")
    p.add_argument("--continue-from", default=None, help="weights to start from, to label with or to test")
    p.add_argument("--log", default="log", help="log file stem: one line per run in OUT_DIR/<log>.txt")
    # --- new
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                   help=f"new: folder holding cifar-10-batches-py/ (default {DEFAULT_DATA_ROOT})")
    p.add_argument("--out-dir", default="runs/classification",
                   help="new: where checkpoints, run records, the config JSON and the log go")
    p.add_argument("--log-dir", default=None, help="new: TensorBoard folder (default OUT_DIR/tb)")
    p.add_argument("--backbone", choices=BACKBONES, default="wrn-28-2",
                   help="new: the network: wrn-28-2 (the paper's) or wrn-28-8; labelling and testing build the same "
                        "one, so pass the backbone the checkpoint was trained with")
    p.add_argument("--ema-decay", type=float, default=0.999,
                   help="new: EMA decay, shadow <- d*shadow + (1-d)*weights after every step. The original "
                        "inverted the update (docs/method.md §11.3); --ema-decay 0.001 reproduces it (≈ the last iterate)")
    p.add_argument("--eval-batch-size", type=int, default=512, help="new: batch size of validation and testing")
    p.add_argument("--resume-every", type=int, default=500,
                   help="new: iterations between resume checkpoints (also after every validation)")
    augment = p.add_mutually_exclusive_group()
    augment.add_argument("--cpu-augment", action="store_true",
                         help="new: augment with the PIL pipeline in the DataLoader workers (the original's exact "
                              "pixels); the default on CPU")
    augment.add_argument("--device-augment", action="store_true",
                         help="new: RandomRandAugment batched on the training device (classification/batch_augment.py; "
                              "the default on CUDA); forces it on CPU")
    add_runtime_args(p, default_workers=workers, default_seed=1)
    p.add_argument("--num-workers", dest="workers", type=int, default=argparse.SUPPRESS,
                   help="the original's name of --workers")


def build_fs_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m classification.main_fs",
        description="Supervised WRN-28-2 on CIFAR-10 with mixup (--state 1), or test a checkpoint (--state 2).")
    p.add_argument("--ra", action="store_true", help="RandomRandAugment (default: AutoAugment + Cutout)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--state", type=int, choices=[1, 2], default=1,
                   help="1 = supervised training; 2 = test --continue-from (appends a line to <log>.txt)")
    _add_shared(p, n=3, m=7, alpha=None, epochs=300, train_set="trainval_seed1",
                train_set_help="training file name in cifar-10-batches-py (e.g. 100_seed1_labeled)", workers=4)
    return p


def build_dmt_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m classification.main_dmt",
        description="DMT / curriculum labelling on CIFAR-10: label the unlabelled split (--labeling), "
                    "or train a fresh WRN-28-2 on [pseudo; labelled] batches.")
    p.add_argument("--gamma1", type=float, default=1, help="DMT γ1 (agreeing samples)")
    p.add_argument("--gamma2", type=float, default=1, help="DMT γ2 (disagreeing samples the teacher is surer of)")
    p.add_argument("--aa", action="store_true", help="AutoAugment + Cutout instead of RandomRandAugment")
    p.add_argument("--labeled-weight", type=float, default=1, help="loss weight of the labelled samples")
    p.add_argument("--start-at", type=int, default=0, help="accepted and unused, as in the original (docs/method.md §3.3)")
    p.add_argument("--batch-size-labeled", type=int, default=64, help="labelled batch (also the labelling batch)")
    p.add_argument("--batch-size-pseudo", type=int, default=448)
    p.add_argument("--labeling", action="store_true", help="label the unlabelled split with --continue-from only")
    p.add_argument("--label-ratio", type=float, default=1,
                   help="curriculum ratio r: keep the images above the (rN-1)-th largest confidence (docs/method.md §2.2)")
    p.add_argument("--pseudo-dir", default=None,
                   help="new: folder of the <train-set>_pseudo file written by --labeling and read for "
                        "training (default: cifar-10-batches-py, as the original)")
    add_label_quality_args(p, "the labeller's file name <exp>__p<k>--ema.pt, k + 1")
    p.add_argument("--ramp-off-by-one", action="store_true",
                   help="new: the original's γ ramp counter (iteration 1 uses the full γ, docs/method.md §11.6)")
    _add_shared(p, n=1, m=10, alpha=0.75, epochs=300, train_set="400_seed1",
                train_set_help="split prefix: <train-set>_labeled / _unlabeled / _pseudo", workers=4)
    return p


def check_shared(args: argparse.Namespace) -> None:
    """Flag values that cannot work, as one-line errors before anything is loaded."""
    from utils.cli import check_number, check_runtime_args

    for flag, value in (("--epochs", args.epochs), ("--val-num-steps", args.val_num_steps), ("--n", args.n),
                        ("--m", args.m), ("--eval-batch-size", args.eval_batch_size)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    check_number("--ema-decay", args.ema_decay, low=0, high=1, hint="0.001 reproduces the original's EMA")
    check_number("--lr", args.lr, low=0, low_open=True, hint="the original's rate is 0.2 (baseline), 0.1 (DMT)")
    check_number("--weight-decay", args.weight_decay, low=0)
    check_number("--resume-every", args.resume_every, low=0, hint="0 = only after validations and at the end")
    check_runtime_args(args)


def smallest_label_ratio(count: int) -> float:
    """The smallest ``--label-ratio`` r < 1 (4 significant digits, rounded up) whose curriculum
    threshold keeps at least one of ``count`` images: index int(−r·N + 1) ≤ −2 (docs/method.md §2.2).
    1.0 when no r < 1 does (N ≤ 3)."""
    import math

    exact = 3.0 / count
    if exact >= 1:
        return 1.0
    unit = 10.0 ** (math.floor(math.log10(exact)) - 3)
    shown = float(f"{math.ceil(exact / unit) * unit:.4g}")
    while int(-shown * count + 1) > -2:  # float rounding of r·N
        shown = float(f"{shown + unit:.4g}")
    return shown if shown < 1 else 1.0


def check_label_ratio(ratio: float, count: int, source: object) -> None:
    """UserError unless ``ratio`` selects a usable part of the ``count`` unlabelled images of ``source``.

    For r < 1 the original keeps the images strictly above P[int(−r·N + 1)] of the ascending
    confidences (docs/method.md §2.2). With r·N < 3 that index rounds to 0 (the whole set but its
    least confident image: r·N < 2) or to −1 (the most confident image: nothing is kept), which the
    original accepted silently. r ≥ 1 keeps every image."""
    if ratio >= 1:
        return
    index = int(-ratio * count + 1)
    if index >= -1:
        kept = "every image but the least confident one" if index == 0 else "no image"
        smallest = smallest_label_ratio(count)
        advice = (f"use --label-ratio >= {smallest:g} (keeps at least one image) or 1 (keeps all)" if smallest < 1
                  else "use --label-ratio 1 (keeps all)")
        raise UserError(f"--label-ratio {ratio:g}: with the {count} unlabelled images of {source} the curriculum "
                        f"index int(-r*N + 1) = {index} keeps {kept}; {advice}")


def parse_fs(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from utils.cli import check_number

    args = build_fs_parser().parse_args(argv)
    check_shared(args)
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    check_number("--alpha", args.alpha, low=0, hint="leave it out for no mixup")
    if args.state == 2 and not args.continue_from:
        raise UserError("--state 2 tests a checkpoint: pass it with --continue-from")
    args.named = args.exp_name != AUTO
    if not args.named:
        args.exp_name = "test" if args.state == 2 else str(int(time.time()))
    return args


def parse_dmt(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from utils.cli import check_number

    args = build_dmt_parser().parse_args(argv)
    check_shared(args)
    for flag, value in (("--batch-size-labeled", args.batch_size_labeled),
                        ("--batch-size-pseudo", args.batch_size_pseudo)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    if args.alpha != -1:
        check_number("--alpha", args.alpha, low=0, hint="-1 = no mixup")
    check_number("--gamma1", args.gamma1, low=0)
    check_number("--gamma2", args.gamma2, low=0)
    check_number("--labeled-weight", args.labeled_weight, low=0)
    check_number("--label-ratio", args.label_ratio, low=0, low_open=True, hint="1 keeps every image")
    if args.labeling and not args.continue_from:
        raise UserError("--labeling needs the labeller's weights: pass --continue-from CHECKPOINT")
    args.named = args.exp_name != AUTO
    if not args.named:
        args.exp_name = str(int(time.time()))
    return args
