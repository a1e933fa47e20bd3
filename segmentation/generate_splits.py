"""Labelled/unlabelled segmentation splits, identical to the released ones (docs/method.md §5.2).

    python -m segmentation.generate_splits --dataset voc   # trainaug.txt -> {f}_labeled_{i}.txt ...
    python -m segmentation.generate_splits --dataset city  # data_lists/train.txt -> ...

The sorted id list is shuffled in place three times in a row after ``random.seed(7777)``; split i
uses the list after the (i+1)-th shuffle. For a factor f, ``{f}_labeled_{i}`` holds the first
n = floor(N/f) ids (n + 1 when n % 8 == 1, avoiding a last batch of one at batch size 8) and
``{f}_unlabeled_{i}`` the rest; ``1_labeled_{i}`` and ``0_unlabeled_{i}`` hold the whole list.
Fractional factors are named by their rounded value (105.82 → 106, 29.75 → 30).
"""
from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import read_id_list, write_text_atomic

SEED = 7777
NUM_SPLITS = 3
DEFAULT_FACTORS = {"voc": (2, 4, 8, 20, 50, 105.82), "city": (2, 4, 8, 20, 29.75)}
DEFAULT_TRAIN_LISTS = {"voc": "datasets/VOCdevkit/VOC2012/ImageSets/Segmentation/trainaug.txt",
                       "city": "datasets/cityscapes/data_lists/train.txt"}


def factor_name(factor: float) -> str:
    """File-name prefix of a factor: 8 → "8", 105.82 → "106", 29.75 → "30"."""
    return str(round(factor))


def labeled_count(total: int, factor: float) -> int:
    """floor(total / factor), plus one when that is 1 modulo 8 (as the original computes it)."""
    n = int(total / factor)
    return n + 1 if n % 8 == 1 else n


def id_list_text(ids: Sequence[str]) -> str:
    """One id per line, every line (the last included) ending in a newline."""
    return "".join(f"{i}\n" for i in ids)


def make_splits(ids: Sequence[str], factors: Sequence[float], num_splits: int = NUM_SPLITS,
                seed: int = SEED) -> dict[str, list[str]]:
    """Return {file name: ids} for all split files. Uses (and reseeds) Python's global ``random``."""
    shuffled = sorted(ids)
    random.seed(seed)
    files: dict[str, list[str]] = {}
    for i in range(num_splits):
        random.shuffle(shuffled)
        for factor in factors:
            n = labeled_count(len(shuffled), factor)
            files[f"{factor_name(factor)}_labeled_{i}.txt"] = shuffled[:n]
            files[f"{factor_name(factor)}_unlabeled_{i}.txt"] = shuffled[n:]
        files[f"1_labeled_{i}.txt"] = list(shuffled)
        files[f"0_unlabeled_{i}.txt"] = list(shuffled)
    return files


def check_inputs(ids: Sequence[str], factors: Sequence[float], source: Path) -> None:
    duplicates = [i for i, c in Counter(ids).items() if c > 1]
    if duplicates:
        raise UserError(f"{source}: {len(duplicates)} duplicated ids (e.g. {duplicates[0]}); fix the list")
    names = [factor_name(f) for f in factors]
    if len(set(names)) != len(names) or set(names) & {"0", "1"}:
        raise UserError(f"{source}: factors {list(factors)} give clashing file names; pass distinct factors > 1.5")
    for factor in factors:
        n = labeled_count(len(ids), factor)
        if factor <= 1 or n == 0 or n >= len(ids):
            raise UserError(f"{source}: factor {factor} leaves {n} of {len(ids)} ids labelled; "
                            f"pass --factors between 1 and {len(ids)}")


def write_splits(files: dict[str, list[str]], out_dir: Path) -> None:
    for name, ids in files.items():
        write_text_atomic(out_dir / name, id_list_text(ids))


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m segmentation.generate_splits",
                                description="Write the released DMT labelled/unlabelled split files.")
    p.add_argument("--dataset", choices=sorted(DEFAULT_FACTORS), default="voc")
    p.add_argument("--train-list", default=None,
                   help="the whole training list (default: " +
                        "; ".join(f"{k}: {v}" for k, v in DEFAULT_TRAIN_LISTS.items()) + ")")
    p.add_argument("--out-dir", default=None, help="where the split files go (default: the train list's folder)")
    p.add_argument("--factors", type=float, nargs="+", default=None,
                   help="labelled fractions 1/f (default VOC 2 4 8 20 50 105.82, City 2 4 8 20 29.75)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    source = Path(args.train_list or DEFAULT_TRAIN_LISTS[args.dataset])
    factors = args.factors or DEFAULT_FACTORS[args.dataset]
    hint = ("write it with python -m segmentation.cityscapes_lists" if args.dataset == "city"
            else "it comes with the SegmentationClassAug (trainaug) download")
    ids = read_id_list(source, hint)
    check_inputs(ids, factors, source)
    out_dir = Path(args.out_dir) if args.out_dir else source.parent
    files = make_splits(ids, factors)
    write_splits(files, out_dir)
    sizes = ", ".join(f"1/{factor_name(f)}: {labeled_count(len(ids), f)}" for f in factors)
    print(f"{len(files)} split files for {len(ids)} ids written to {out_dir} (labelled {sizes})")


if __name__ == "__main__":
    sys.exit(run_cli(main))
