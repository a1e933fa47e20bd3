"""CIFAR-10 train/valtiny and labelled/unlabelled splits (docs/method.md §5.5).

    python -m classification.generate_splits --root DIR   # DIR holds cifar-10-batches-py/

Writes into ``DIR/cifar-10-batches-py`` (each file atomically, pickles {"data": uint8 (n, 3072),
"labels": list of int}):

1. ``trainval_seed1`` = ``data_batch_1..5`` concatenated. For each class c = 0..9 in turn, its rows
   (in trainval order) are shuffled with numpy; the last ``--val-size`` (20) go to ``valtiny_seed1``
   and the rest to ``train_seed1`` (both grouped by class).
2. For each seed s in ``--seeds`` (1..5): ``np.random.seed(s)``, then each class's ``train_seed1``
   rows are shuffled in class order, one stream, and the first k of each class (k in ``--sizes``,
   4 25 100 400) form ``{k}_seed{s}_labeled``, the rest ``{k}_seed{s}_unlabeled`` (both grouped by
   class). Smaller labelled sets are prefixes, per class, of larger ones.
3. ``test_batch`` is copied byte for byte to ``test``.

Deviation (docs/method.md §11.9): the original shuffles step 1 with numpy's unseeded global RNG, so no split
was reproducible. Here step 1 draws from ``np.random.RandomState(--valtiny-seed)`` (default 0) —
the same stream as ``np.random.seed(0)`` + ``np.random.shuffle``; ``--valtiny-seed -1`` restores the
original's unseeded behaviour. The "seed1" in the step-1 file names is the original's fixed name.

``--from-train NAME`` skips steps 1 and 3 and splits an existing file (the original's
``--train-file``), e.g. to add seeds without regenerating ``train_seed1``.

Any per-class count works (e.g. small synthetic sets): every class needs more than ``--val-size``
rows, and no labelled size may exceed a class's ``train`` rows.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from classification.cifar import (DOWNLOAD_HINT, NUM_CLASSES, TEST_BATCH, CifarArrays, cifar_folder, read_labelled,
                                  read_official_train, write_labelled)
from classification.run_config import TEST_SET, VALTINY_SET
from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import write_bytes_atomic

DEFAULT_SIZES = (4, 25, 100, 400)  # labelled images per class
DEFAULT_SEEDS = (1, 2, 3, 4, 5)
DEFAULT_VAL_SIZE = 20  # valtiny images per class
DEFAULT_VALTINY_SEED = 0
TRAINVAL_SET, TRAIN_SET = "trainval_seed1", "train_seed1"


def split_prefix(size: int, seed: int) -> str:
    """``{size}_seed{seed}``; the files are ``<prefix>_labeled`` / ``<prefix>_unlabeled``."""
    return f"{size}_seed{seed}"


def _class_blocks(arrays: CifarArrays, rng: np.random.RandomState, num_classes: int) -> list[np.ndarray]:
    """For c = 0..num_classes-1 in order: class c's rows (in file order), shuffled with ``rng``."""
    blocks = []
    for c in range(num_classes):
        rows = arrays.data[arrays.targets == c]
        rng.shuffle(rows)  # rows is a copy; shuffles along axis 0 like np.random.shuffle
        blocks.append(rows)
    return blocks


def _grouped(blocks: Sequence[np.ndarray]) -> CifarArrays:
    """Concatenate per-class row blocks (class c = blocks[c]) with their labels."""
    labels = np.concatenate([np.full(len(b), c, dtype=np.int64) for c, b in enumerate(blocks)])
    return CifarArrays(np.concatenate(blocks), labels)


def check_class_counts(arrays: CifarArrays, minimum: int, what: str, source: Path,
                       num_classes: int = NUM_CLASSES) -> None:
    """Every class must have at least ``minimum`` rows, else a UserError naming ``source``."""
    counts = np.bincount(arrays.targets, minlength=num_classes)
    short = [c for c in range(num_classes) if counts[c] < minimum]
    if short:
        raise UserError(f"{source}: class {short[0]} has {counts[short[0]]} images, fewer than the {minimum} "
                        f"needed for {what}; pass smaller sizes")


def split_train_valtiny(trainval: CifarArrays, val_size: int, rng: np.random.RandomState,
                        num_classes: int = NUM_CLASSES) -> tuple[CifarArrays, CifarArrays]:
    """(train, valtiny): per class, shuffle, the last ``val_size`` rows to valtiny (docs/method.md §5.5 step 1)."""
    blocks = _class_blocks(trainval, rng, num_classes)
    return (_grouped([b[:len(b) - val_size] for b in blocks]),
            _grouped([b[len(b) - val_size:] for b in blocks]))


def split_labelled(train: CifarArrays, sizes: Sequence[int], seed: int,
                   num_classes: int = NUM_CLASSES) -> dict[int, tuple[CifarArrays, CifarArrays]]:
    """{size: (labelled, unlabelled)} after ``np.random.seed(seed)`` (docs/method.md §5.5 step 2), without
    touching numpy's global RNG: ``RandomState(seed)`` draws the same stream."""
    blocks = _class_blocks(train, np.random.RandomState(seed), num_classes)
    return {k: (_grouped([b[:k] for b in blocks]), _grouped([b[k:] for b in blocks])) for k in sizes}


def _check_args(sizes: Sequence[int], seeds: Sequence[int], val_size: int, valtiny_seed: int) -> None:
    if not sizes or any(k < 1 for k in sizes):
        raise UserError(f"--sizes {list(sizes)}: labelled sizes must be integers >= 1; pass e.g. --sizes 4 25 100 400")
    if len(set(sizes)) != len(sizes) or len(set(seeds)) != len(seeds):
        raise UserError(f"--sizes {list(sizes)} --seeds {list(seeds)}: repeated values; pass each once")
    if any(s < 0 or s >= 2**32 for s in seeds):
        raise UserError(f"--seeds {list(seeds)}: numpy seeds must be in 0..2**32-1; pass other seeds")
    if val_size < 1:
        raise UserError(f"--val-size {val_size}: must be >= 1; pass e.g. --val-size 20")
    if valtiny_seed < -1 or valtiny_seed >= 2**32:
        raise UserError(f"--valtiny-seed {valtiny_seed}: must be -1 (unseeded) or 0..2**32-1; pass another seed")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m classification.generate_splits",
                                description="Write the CIFAR-10 valtiny/train and labelled/unlabelled split pickles.")
    p.add_argument("--root", required=True, help="folder that contains cifar-10-batches-py/ (files are written there)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                   help="numpy seeds of the labelled splits (default: 1 2 3 4 5)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                   help="labelled images per class (default: 4 25 100 400)")
    p.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE, help="valtiny images per class (default: 20)")
    p.add_argument("--valtiny-seed", type=int, default=DEFAULT_VALTINY_SEED,
                   help="numpy seed of the valtiny/train shuffle (default 0; -1 = unseeded, as the original)")
    p.add_argument("--from-train", default=None, metavar="NAME",
                   help="split this existing file of cifar-10-batches-py instead of regenerating "
                        "trainval/train/valtiny/test (the original's --train-file)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _check_args(args.sizes, args.seeds, args.val_size, args.valtiny_seed)
    folder = cifar_folder(args.root)
    outputs: dict[str, CifarArrays] = {}
    if args.from_train is None:  # steps 1 and 3
        read_labelled(folder / TEST_BATCH, hint=DOWNLOAD_HINT)  # validate before copying
        test_bytes = (folder / TEST_BATCH).read_bytes()
        trainval = read_official_train(args.root)
        check_class_counts(trainval, args.val_size + 1, f"a valtiny of {args.val_size} per class",
                           folder / "data_batch_1..5")
        rng = np.random.RandomState(None if args.valtiny_seed == -1 else args.valtiny_seed)
        train, valtiny = split_train_valtiny(trainval, args.val_size, rng)
        outputs.update({TRAINVAL_SET: trainval, TRAIN_SET: train, VALTINY_SET: valtiny})
        source, after = folder / "data_batch_1..5", f" after a valtiny of {args.val_size} per class"
    else:
        source, after = folder / args.from_train, ""
        train = read_labelled(source)
    check_class_counts(train, max(args.sizes), f"{max(args.sizes)} labelled images per class{after}", source)
    # Every check is done: write step 1 and 3, then each seed's files (one seed in memory at a time).
    for name, arrays in outputs.items():
        write_labelled(folder / name, *arrays)
    if args.from_train is None:
        write_bytes_atomic(folder / TEST_SET, test_bytes)
    written = len(outputs) + (args.from_train is None)
    for seed in args.seeds:  # step 2
        for size, (labelled, unlabelled) in split_labelled(train, args.sizes, seed).items():
            write_labelled(folder / f"{split_prefix(size, seed)}_labeled", *labelled)
            write_labelled(folder / f"{split_prefix(size, seed)}_unlabeled", *unlabelled)
            written += 2
    print(f"{written} CIFAR-10 split files written to {folder} (from {len(train.data)} training images; "
          f"labelled per class {list(args.sizes)}, seeds {list(args.seeds)})", flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
