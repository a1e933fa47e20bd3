"""The SBD split: VOC 2012 ``train`` labelled, the SBD rest of trainaug unlabelled (docs/method.md §5.3).

    python -m segmentation.sbd_split --voc-root datasets/VOCdevkit/VOC2012

Writes ``train_labeled_0.txt`` (the ``train.txt`` ids in that file's order, 1,464 for VOC) and
``train_unlabeled_0.txt`` (the other ``trainaug.txt`` ids in trainaug order, 9,118) next to them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from segmentation.generate_splits import id_list_text
from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import read_id_list, require_dir, write_text_atomic

SETS_SUBDIR = Path("ImageSets/Segmentation")


def sbd_split(trainaug: Sequence[str], train: Sequence[str]) -> tuple[list[str], list[str]]:
    """(labelled = ``train`` as given, unlabelled = trainaug ids not in ``train``, in trainaug order)."""
    train_set = set(train)
    return list(train), [i for i in trainaug if i not in train_set]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m segmentation.sbd_split",
                                description="Write train_labeled_0.txt / train_unlabeled_0.txt (VOC train vs SBD).")
    p.add_argument("--voc-root", default="datasets/VOCdevkit/VOC2012",
                   help="the VOC2012 folder (its ImageSets/Segmentation holds trainaug.txt and train.txt)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sets_dir = require_dir(Path(args.voc_root) / SETS_SUBDIR, "VOC ImageSets/Segmentation",
                           "pass the VOC2012 folder with --voc-root")
    trainaug = read_id_list(sets_dir / "trainaug.txt", "it comes with the SegmentationClassAug (trainaug) download")
    train = read_id_list(sets_dir / "train.txt", "it comes with the VOC 2012 trainval download")
    outside = sorted(set(train) - set(trainaug))
    if outside:
        raise UserError(f"{sets_dir / 'train.txt'}: {len(outside)} ids are not in trainaug.txt "
                        f"(e.g. {outside[0]}); check both lists")
    labeled, unlabeled = sbd_split(trainaug, train)
    write_text_atomic(sets_dir / "train_labeled_0.txt", id_list_text(labeled))
    write_text_atomic(sets_dir / "train_unlabeled_0.txt", id_list_text(unlabeled))
    print(f"train_labeled_0: {len(labeled)} ids, train_unlabeled_0: {len(unlabeled)} ids "
          f"(VOC 2012: 1,464 / 9,118) written to {sets_dir}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
