"""Difference-maximised sampling: two overlapping labelled subsets per split (docs/method.md §5.4).

    python -m segmentation.dms_sample --sets-dir datasets/VOCdevkit/VOC2012/ImageSets/Segmentation

After ``random.seed(7777)`` (once), for i = 0, 1, 2 and then each factor f (one random stream),
``{f}_labeled_{i}`` is shuffled; with T ids and n_x = ceil(0.2·T), ``{f}-l_labeled_{i}`` holds the
first T − n_x ids and ``{f}-r_labeled_{i}`` the ids from n_x on, so they share T − 2·n_x ids
(100 → 80/80, 60 shared). The unlabelled lists are not touched.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path
from typing import Sequence

from segmentation.generate_splits import NUM_SPLITS, SEED, id_list_text
from utils.cli import ArgumentParser
from utils.errors import run_cli
from utils.io import read_id_list, write_text_atomic

DEFAULT_FACTORS = ("8", "20", "50", "106")
EXCLUSIVE_FRACTION = 0.2  # each model's exclusive share: (1 − 0.6 common) / 2


def dms_split(ids: Sequence[str], rng: random.Random | None = None) -> tuple[list[str], list[str]]:
    """Shuffle a copy of ``ids`` with ``rng`` (default: the global ``random``); return (left, right)."""
    lines = list(ids)
    (rng or random).shuffle(lines)
    n_exclusive = math.ceil(EXCLUSIVE_FRACTION * len(lines))
    return lines[:len(lines) - n_exclusive], lines[n_exclusive:]


def dms_files(sets_dir: Path, factors: Sequence[str], num_splits: int = NUM_SPLITS,
              seed: int = SEED) -> dict[str, list[str]]:
    """Return {file name: ids} of every ``{f}-l``/``{f}-r`` file. Reseeds Python's global ``random``."""
    random.seed(seed)
    files: dict[str, list[str]] = {}
    for i in range(num_splits):
        for factor in factors:
            ids = read_id_list(sets_dir / f"{factor}_labeled_{i}.txt",
                               "write the splits first with python -m segmentation.generate_splits")
            files[f"{factor}-l_labeled_{i}.txt"], files[f"{factor}-r_labeled_{i}.txt"] = dms_split(ids)
    return files


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m segmentation.dms_sample",
                                description="Write the DMS left/right labelled subsets {f}-l / {f}-r.")
    p.add_argument("--sets-dir", default="datasets/VOCdevkit/VOC2012/ImageSets/Segmentation",
                   help="folder holding {f}_labeled_{i}.txt; the new files go there too")
    p.add_argument("--factors", nargs="+", default=list(DEFAULT_FACTORS),
                   help="split-file prefixes, in this order (default 8 20 50 106)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sets_dir = Path(args.sets_dir)
    files = dms_files(sets_dir, args.factors)
    for name, ids in files.items():
        write_text_atomic(sets_dir / name, id_list_text(ids))
    for i in range(NUM_SPLITS):
        sizes = ", ".join(f"{f}: {len(files[f'{f}-l_labeled_{i}.txt'])}" for f in args.factors)
        print(f"split {i}: l/r sizes {sizes}")
    print(f"{len(files)} files written to {sets_dir}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
