"""The experiments this repository runs and the paper's numbers for them (docs/method.md §10).

Data only, read by the results report (:mod:`utils.report`): the experiment names (one script each,
``segmentation/<name>.sh`` / ``classification/<name>.sh``), the paper's number per experiment and
run tag, and the compact tables laid out as the paper prints them.
"""
from __future__ import annotations

import fnmatch

BEST_TAG = "p5--best"  # the derived DMT row of a segmentation experiment (utils.report_tables.with_best_rows)
SEG_BASELINE = "p0--[cilr]"  # tag pattern of the segmentation baselines (every model's phase 0)

SEG_EXPERIMENTS = ("dmt-voc-106", "dmt-voc-50", "dmt-voc-20", "dmt-voc-8", "dmt-city-30", "dmt-city-8",
                   "dmt-voc-sbd", "abl-baseline", "abl-cbst", "abl-dst", "abl-naive", "abl-flip", "abl-online")
CLS_EXPERIMENTS = ("cl-c10-4000", "dmt-c10-4000", "cl-c10-1000", "dmt-c10-1000")
EXPERIMENTS = SEG_EXPERIMENTS + CLS_EXPERIMENTS

# docs/method.md §10, per experiment: {tag pattern (fnmatch): the paper's number}.
PAPER: dict[str, dict[str, float]] = {
    "dmt-voc-106": {SEG_BASELINE: 46.66, BEST_TAG: 63.04},
    "dmt-voc-50": {SEG_BASELINE: 55.62, BEST_TAG: 67.15},
    "dmt-voc-20": {SEG_BASELINE: 62.29, BEST_TAG: 69.92},
    "dmt-voc-8": {SEG_BASELINE: 67.37, BEST_TAG: 72.70},
    "dmt-city-30": {SEG_BASELINE: 49.54, BEST_TAG: 54.80},
    "dmt-city-8": {SEG_BASELINE: 59.65, BEST_TAG: 63.03},
    "dmt-voc-sbd": {SEG_BASELINE: 72.10, BEST_TAG: 74.85, "oracle": 74.75},
    "cl-c10-4000": {"p0--test": 86.08, "p5--test": 94.02},
    "dmt-c10-4000": {"p0--test": 86.08, "p5--test": 94.21},
}

# Compact tables as the paper lays them out: (title, metric, columns, rows); a cell is
# (experiment, tag pattern) for ours and the paper's number (None = no number in the paper).
Cell = tuple[tuple[str, str] | None, float | None]
PAPER_TABLES: list[tuple[str, str, list[str], list[tuple[str, list[Cell]]]]] = [
    ("PASCAL VOC 2012", "val mIoU", ["1/106 (100)", "1/50", "1/20", "1/8", "full"], [
        ("Baseline (DeepLab-v2)", [(("dmt-voc-106", SEG_BASELINE), 46.66), (("dmt-voc-50", SEG_BASELINE), 55.62),
                                   (("dmt-voc-20", SEG_BASELINE), 62.29), (("dmt-voc-8", SEG_BASELINE), 67.37),
                                   (("dmt-voc-sbd", "oracle"), 74.75)]),
        ("DMT", [(("dmt-voc-106", BEST_TAG), 63.04), (("dmt-voc-50", BEST_TAG), 67.15),
                 (("dmt-voc-20", BEST_TAG), 69.92), (("dmt-voc-8", BEST_TAG), 72.70),
                 (("dmt-voc-sbd", "oracle"), 74.75)]),
    ]),
    ("Cityscapes", "val mIoU", ["1/30 (100)", "1/8", "full"], [
        ("Baseline (DeepLab-v2)", [(("dmt-city-30", SEG_BASELINE), 49.54), (("dmt-city-8", SEG_BASELINE), 59.65),
                                   (None, 68.16)]),
        ("DMT", [(("dmt-city-30", BEST_TAG), 54.80), (("dmt-city-8", BEST_TAG), 63.03), (None, 68.16)]),
    ]),
    ("VOC 2012 + SBD", "val mIoU", ["1,464 labels", "+ 9,118 SBD labels (oracle)", "+ DMT on the SBD images"], [
        ("mIoU", [(("dmt-voc-sbd", SEG_BASELINE), 72.10), (("dmt-voc-sbd", "oracle"), 74.75),
                    (("dmt-voc-sbd", BEST_TAG), 74.85)]),
    ]),
    ("CIFAR-10", "test accuracy", ["1,000 labels", "4,000 labels"], [
        ("Baseline (WRN-28-2)", [(("cl-c10-1000", "p0--test"), None), (("cl-c10-4000", "p0--test"), 86.08)]),
        ("Curriculum Labeling", [(("cl-c10-1000", "p5--test"), None), (("cl-c10-4000", "p5--test"), 94.02)]),
        ("DMT", [(("dmt-c10-1000", "p5--test"), None), (("dmt-c10-4000", "p5--test"), 94.21)]),
    ]),
]


def paper_number(experiment: str, tag: str) -> float | None:
    """The paper's number for an experiment's run tag; None where the paper has none."""
    for pattern, number in PAPER.get(experiment, {}).items():
        if fnmatch.fnmatchcase(tag, pattern):
            return number
    return None
