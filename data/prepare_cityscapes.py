"""Check a Cityscapes fine folder and write its id lists (docs/method.md §5.1).

    python -m data.prepare_cityscapes --city-root datasets/cityscapes \\
        [--expect-counts 2975 500 | --no-check-counts] [--no-check-labels] [--workers N]

Checks, before anything is written:

* ``leftImg8bit/{train,val}`` and ``gtFine/{train,val}`` exist; every image
  ``leftImg8bit/<split>/<e>_leftImg8bit.png`` has its ``gtFine/<split>/<e>_gtFine_labelIds.png``
  (label files without an image are reported, not an error);
* the counts: 2,975 train / 500 val unless ``--expect-counts`` / ``--no-check-counts``;
* unless ``--no-check-labels``: every labelIds file is a single-channel PNG of the image's size
  with values 0..33, and each split holds some id ≥ 19 (a split of values 0..18 only is
  ``*_labelTrainIds.png`` passed off as labelIds). The pixel counts are then mapped to train ids
  with ``CITY_LABEL_TO_TRAIN_ID`` (segmentation/transforms.py, the mapping the training uses) and
  the share of ignored (255) pixels and any train id absent from a split are printed.

Then ``data_lists/{train,val}.txt`` (and ``test.txt`` if ``leftImg8bit/test`` exists) are written
atomically in the format of ``segmentation.cityscapes_lists``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from data.prepare_common import add_count_flags, add_workers_flag, check_counts, examples, run_jobs
from segmentation.cityscapes_lists import list_split
from segmentation.datasets import read_index_png
from segmentation.run_config import CITY_NUM_CLASSES
from segmentation.generate_splits import id_list_text
from segmentation.transforms import CITY_NUM_LABEL_IDS, IGNORE_INDEX, city_label_lut
from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import require_dir, write_text_atomic

CITY_TRAIN_COUNT = 2975
CITY_VAL_COUNT = 500
CHECKED_SPLITS = ("train", "val")
LABEL_SUFFIX = "_gtFine_labelIds.png"
GT_HINT = "extract gtFine_trainvaltest.zip into the Cityscapes folder (--city-root)"
IMAGE_HINT = "extract leftImg8bit_trainvaltest.zip into the Cityscapes folder (--city-root)"


def label_file(city_root: Path, split: str, entry: str) -> Path:
    return city_root / "gtFine" / split / f"{entry}{LABEL_SUFFIX}"


def image_file(city_root: Path, split: str, entry: str) -> Path:
    return city_root / "leftImg8bit" / split / f"{entry}_leftImg8bit.png"


def label_entries(city_root: Path, split: str) -> set[str]:
    """``city/stem`` of every ``gtFine/<split>/<city>/*_gtFine_labelIds.png``."""
    gt_dir = require_dir(city_root / "gtFine" / split, f"Cityscapes {split} labels", GT_HINT)
    return {f"{city.name}/{name[:-len(LABEL_SUFFIX)]}"
            for city in gt_dir.iterdir() if city.is_dir()
            for name in os.listdir(city) if name.endswith(LABEL_SUFFIX)}


def label_id_histogram(job: tuple[Path, Path]) -> np.ndarray:
    """(labelIds PNG, image): pixel count of each label id 0..33, after checking values and size."""
    label_path, image_path = job
    labels = read_index_png(label_path, f"use the gtFine *{LABEL_SUFFIX} files ({GT_HINT})")
    bad = (labels < 0) | (labels >= CITY_NUM_LABEL_IDS)
    if bad.any():
        raise UserError(f"{label_path}: label id {int(labels[bad].flat[0])} out of range (Cityscapes labelIds are "
                        f"0..{CITY_NUM_LABEL_IDS - 1}); use the *{LABEL_SUFFIX} files, not labelTrainIds or color")
    try:
        with Image.open(image_path) as img:
            image_hw = (img.height, img.width)
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{image_path}: cannot read image ({' '.join(str(exc).split())}); {IMAGE_HINT}") from None
    if labels.shape != image_hw:
        raise UserError(f"{label_path}: label is {labels.shape[0]}×{labels.shape[1]} but its image is "
                        f"{image_hw[0]}×{image_hw[1]}; {GT_HINT}")
    return np.bincount(labels.ravel(), minlength=CITY_NUM_LABEL_IDS)


def train_id_histogram(label_id_counts: np.ndarray) -> np.ndarray:
    """Pixel counts per train id 0..18, then the ignored (255) count as the last entry."""
    lut = city_label_lut().numpy()[:CITY_NUM_LABEL_IDS]
    mapped = np.bincount(lut, weights=label_id_counts, minlength=IGNORE_INDEX + 1).astype(np.int64)
    return np.append(mapped[:CITY_NUM_CLASSES], mapped[IGNORE_INDEX])


def check_labels(city_root: Path, split: str, entries: Sequence[str], workers: int) -> str:
    """Check every labelIds file of a split; return a one-line summary of its train-id content."""
    jobs = [(label_file(city_root, split, e), image_file(city_root, split, e)) for e in entries]
    counts = np.zeros(CITY_NUM_LABEL_IDS, dtype=np.int64)
    for hist in run_jobs(label_id_histogram, jobs, workers):
        counts += hist
    if counts[CITY_NUM_CLASSES:].sum() == 0:
        raise UserError(f"{city_root / 'gtFine' / split}: every label value is below {CITY_NUM_CLASSES}, so these "
                        f"look like train ids, not labelIds (no sky, car, vegetation ...); use the "
                        f"*{LABEL_SUFFIX} files")
    train = train_id_histogram(counts)
    absent = [str(t) for t in range(CITY_NUM_CLASSES) if train[t] == 0]
    summary = (f"{split}: {len(entries):,} images, {CITY_NUM_CLASSES - len(absent)}/{CITY_NUM_CLASSES} train ids "
               f"present, {100.0 * train[-1] / train.sum():.1f}% of pixels ignored (255)")
    return summary + (f"; train ids never present: {', '.join(absent)}" if absent else "")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m data.prepare_cityscapes",
                                description="Check a Cityscapes folder and write data_lists/{train,val}.txt.")
    p.add_argument("--city-root", default="datasets/cityscapes",
                   help="the Cityscapes folder (leftImg8bit/, gtFine/)")
    add_count_flags(p, CHECKED_SPLITS, (CITY_TRAIN_COUNT, CITY_VAL_COUNT))
    p.add_argument("--no-check-labels", action="store_true",
                   help="skip reading the labelIds files (values, sizes, train-id summary)")
    add_workers_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, list[str]]:
    args = build_parser().parse_args(argv)
    city_root = require_dir(args.city_root, "Cityscapes", "pass the folder holding leftImg8bit/ and gtFine/")
    lists = {split: list_split(city_root, split) for split in CHECKED_SPLITS}
    for split, entries in lists.items():
        have = label_entries(city_root, split)
        missing = [e for e in entries if e not in have]
        if missing:
            raise UserError(f"{city_root / 'gtFine' / split}: no *{LABEL_SUFFIX} for {examples(missing)}; {GT_HINT}")
        orphans = sorted(have - set(entries))
        if orphans:
            print(f"note: {split}: labels without an image for {examples(orphans)}; not listed", flush=True)
    check_counts(args, {split: len(entries) for split, entries in lists.items()}, city_root / "leftImg8bit")
    if not args.no_check_labels:
        for split, entries in lists.items():
            print(check_labels(city_root, split, entries, args.workers), flush=True)
    if (city_root / "leftImg8bit" / "test").is_dir():
        lists["test"] = list_split(city_root, "test")
    for split, entries in lists.items():
        write_text_atomic(city_root / "data_lists" / f"{split}.txt", id_list_text(entries))
    counts = ", ".join(f"{split}: {len(entries):,}" for split, entries in lists.items())
    print(f"{city_root / 'data_lists'}: {counts} entries written", flush=True)
    return lists


if __name__ == "__main__":
    sys.exit(run_cli(main))
