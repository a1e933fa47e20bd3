"""Command-line flags of ``segmentation/main.py``.

The original program's flags (docs/method.md §9.1) keep their names, defaults and meaning; the new ones are
marked "new". Batch-size flags are global batches (split across torchrun processes).
"""
from __future__ import annotations

import argparse
import time
from typing import Sequence

from utils.cli import ArgumentParser, add_label_quality_args, add_runtime_args

STATES = {1: "dmt (or labelling with --labeling)", 2: "supervised", 3: "test"}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m segmentation.main",
        description="DMT semantic segmentation: supervised training (--state 2), pseudo-labelling "
                    "(--state 1 --labeling), DMT training (--state 1) and testing (--state 3).")
    # --- the original flags (docs/method.md §9.1)
    p.add_argument("--exp-name", default=None, help="run name (default: unix time)")
    p.add_argument("--dataset", choices=["voc", "city"], default="voc")
    p.add_argument("--gamma1", type=float, default=0.0, help="DMT γ1 (agreeing pixels)")
    p.add_argument("--gamma2", type=float, default=0.0, help="DMT γ2 (disagreeing pixels the teacher is surer of)")
    p.add_argument("--val-num-steps", type=int, default=500, help="validate every this many iterations")
    p.add_argument("--label-ratio", type=float, default=0.2, help="CBC ratio r: kept fraction of pixels per class")
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size-labeled", type=int, default=1, help="labelled batch (also the labelling batch)")
    p.add_argument("--batch-size-pseudo", type=int, default=7)
    p.add_argument("--do-not-save", action="store_true", help="delete the best snapshot at the end instead of keeping it")
    p.add_argument("--coco", action="store_true", help="COCO/Caffe input convention (BGR, 0-255, mean subtraction)")
    p.add_argument("--valtiny", action="store_true", help="validate on the 20-image valtiny list")
    p.add_argument("--labeling", action="store_true", help="with --state 1: write pseudo labels only")
    p.add_argument("--continue-from", default=None, help="weights to start from, to label with, or to test")
    p.add_argument("--train-set", default="1", help="split prefix: {train-set}_labeled_{sets-id}.txt")
    p.add_argument("--sets-id", type=int, default=0, help="split index i of the split files")
    p.add_argument("--state", type=int, choices=sorted(STATES), default=1,
                   help="; ".join(f"{k} = {v}" for k, v in STATES.items()))
    # --- new: paths
    p.add_argument("--data-root", default=None,
                   help="VOC: the VOC2012 folder (default datasets/VOCdevkit/VOC2012); "
                        "city: the Cityscapes folder (default datasets/cityscapes)")
    p.add_argument("--out-dir", default="runs/segmentation",
                   help="new: where snapshots, run records, pseudo labels and log.txt go")
    p.add_argument("--log-dir", default=None, help="new: TensorBoard folder (default OUT_DIR/tb)")
    p.add_argument("--pseudo-dir", default=None,
                   help="new: pseudo-label folder to write (--labeling) or read (--state 1) "
                        "(default OUT_DIR/pseudo/EXP_NAME)")
    # --- new: model
    p.add_argument("--backbone", choices=["resnet101", "resnet50", "mobilenet_v3_large", "tiny"], default="resnet101",
                   help="new: resnet101 (the paper's), resnet50, mobilenet_v3_large or tiny (a small from-scratch net for CPU demos)")
    p.add_argument("--pretrained", default="imagenet",
                   help="new: backbone init when --continue-from is not given: imagenet | none | PATH")
    p.add_argument("--all-aspp-branches", action="store_true",
                   help="new: sum all four ASPP branches (the original sums only d6 + d12, docs/method.md §11.1)")
    # --- new: method variants and sizes
    p.add_argument("--loss", choices=["dmt", "naive", "flip", "online"], default="dmt",
                   help="new: DMT loss or an ablation loss (docs/method.md §3.2)")
    p.add_argument("--online-threshold", type=float, default=0.9, help="new: confidence threshold of --loss online")
    p.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="new: training crop (default VOC 321 321, city 256 512)")
    p.add_argument("--test-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="new: test/labelling size (default VOC pad to 505 505, city resize to 512 1024)")
    p.add_argument("--label-stride", type=int, default=16, help="new: CBC samples every N-th pixel (docs/method.md §2.1: 16)")
    p.add_argument("--label-cache-gb", type=float, default=None,
                   help="new: host memory (GiB) for the labeller's one-pass cache of (label, confidence); beyond it "
                        "a scratch file in the .partial folder (default: 25%% of MemAvailable over the node's "
                        "processes; 0 = no cache, the original's two forward passes)")
    add_label_quality_args(p, "the run names <exp>__p<k>--<model>")
    p.add_argument("--eval-protocol", choices=["whole", "sliding", "msf"], default="whole",
                   help="new: test protocol: whole image (the paper's), sliding window, multi-scale + flip")
    p.add_argument("--eval-crop", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="new: sliding-window size (default: the training crop)")
    p.add_argument("--eval-stride", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="new: sliding-window stride (default: 2/3 of the window)")
    p.add_argument("--eval-scales", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.25, 1.5],
                   help="new: scales of --eval-protocol msf")
    p.add_argument("--eval-no-flip", action="store_true", help="new: --eval-protocol msf without the mirrored passes")
    p.add_argument("--online-double-step", action="store_true",
                   help="new: --loss online steps the optimizer a second time per iteration, as the original "
                        "main_online.py did (docs/method.md §11.18); off = one step")
    # --- new: runtime
    p.add_argument("--resume-every", type=int, default=500,
                   help="new: iterations between resume checkpoints (also after every validation)")
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="new: SyncBatchNorm under torchrun (default: on with CUDA, so BN sees the whole global batch "
                        "as in one process; plain per-process BN on CPU/gloo, where SyncBN cannot run); "
                        "--no-sync-bn: per-process BN statistics")
    add_runtime_args(p, default_workers=4, default_seed=1)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.exp_name is None:
        args.exp_name = str(int(time.time()))
    return args
