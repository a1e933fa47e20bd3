"""Markdown tables of the results in ``log.txt`` files, beside the paper's numbers (docs/method.md §10).

    python -m utils.report LOG_OR_DIR [LOG_OR_DIR ...] [--gpu-hours] [--out FILE] [--plots DIR]

Reads each given ``log.txt`` and every ``log.txt`` below each given folder. Lines are read with
:func:`utils.run_log.parse_log_line`; lines of another shape, and run names that do not follow the
convention below, are skipped (and counted). Run names are ``<experiment>-<run>__<tag>``: ``run``
is the split id (segmentation) or the seed (classification); ``tag`` is ``p<k>--<model>`` (phase
k = 0 baseline ... 5, model c/i/l/r), ``oracle``, or for classification ``p<k>`` (a training run)
and ``p<k>--test`` (that phase's EMA on the test set). The same run found twice keeps its last line.

Output:

* one table per experiment: for each tag, mean ± sample std (ddof = 1; "–" for one run), the
  number of runs, the run ids and the paper's number where docs/method.md §10 has one. Segmentation
  experiments get a derived row ``p5--best``: per run, the better of its models' p5 results
  (this is what the paper's DMT row is compared with); baselines are the ``p0--<model>`` rows;
* a compact table per dataset laid out as in the paper (columns = label ratios), ours and the
  paper's rows;
* with ``--gpu-hours``: Σ wall_s × procs / 3600 per experiment and device and overall, over the lines
  that carry ``wall_s`` (``procs`` missing counts as 1);
* every per-experiment row says its metric and evaluation set, read from the line's fields
  (``metric=`` / ``protocol=``, ``val=`` / ``set=``; segmentation lines are mIoU; a classification
  test line without ``metric=`` is matched against its ``accuracy=`` / ``fine_grained=`` fields);
* a pseudo-label quality table per experiment when labelling passes recorded it: log.txt lines
  with a ``kept`` and/or ``pseudo_acc`` field (and ``pseudo_miou``), and ``labeling.json`` records
  below the given folders, named ``<labeller run>-for-<target run>`` (the record's folder name for
  ``labeling.json``); the row is the target run's tag, i.e. the phase and model the labels are for.
  Fractions ≤ 1 are shown as percentages (``kept`` counts with a ``total`` are divided by it);
* with ``--plots DIR``: PNGs (matplotlib, Agg) of the same numbers — ``<experiment>.png``, the result
  of every phase for each model (mean ± std over runs) against our baseline and the paper's numbers,
  and ``<experiment>_pseudo.png``, pseudo-label accuracy against the kept fraction per phase (when
  the labelling fields exist).

The work is split by job: :mod:`utils.report_logs` reads the files, :mod:`utils.report_tables` writes
the markdown, :mod:`utils.report_plots` draws the figures, :mod:`utils.paper_results` holds the
experiments and the paper's numbers; this module is the command line. The names other code uses
(``read_logs``, ``RUN_NAME``, ``with_best_rows``, ...) are importable from here as before.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import require_writable_dir, write_text_atomic
from utils.paper_results import (BEST_TAG, CLS_EXPERIMENTS, EXPERIMENTS, PAPER, PAPER_TABLES, SEG_EXPERIMENTS,
                                 Cell, paper_number)
from utils.report_logs import (FOR_SEPARATOR, LABEL_FIELDS, METRIC_NAMES, PHASE_TAG, RUN_NAME, SEG_MODELS,
                               LabelQuality, LogData, Result, find_label_records, find_logs, label_quality,
                               labelling_target, metric_of, read_label_records, read_logs, split_run_name)
from utils.report_plots import pseudo_figure, results_figure, write_plots
from utils.report_tables import (NOTES, experiment_order, experiment_tables, gpu_hours_table, label_tables,
                                 mean_std, paper_tables, render, select, tag_order, with_best_rows)

__all__ = [
    "BEST_TAG", "CLS_EXPERIMENTS", "EXPERIMENTS", "PAPER", "PAPER_TABLES", "SEG_EXPERIMENTS", "Cell", "paper_number",
    "FOR_SEPARATOR", "LABEL_FIELDS", "METRIC_NAMES", "PHASE_TAG", "RUN_NAME", "SEG_MODELS", "LabelQuality",
    "LogData", "Result", "find_label_records", "find_logs", "label_quality", "labelling_target", "metric_of",
    "read_label_records", "read_logs", "split_run_name", "pseudo_figure", "results_figure", "write_plots", "NOTES",
    "experiment_order", "experiment_tables", "gpu_hours_table", "label_tables", "mean_std", "paper_tables",
    "render", "select", "tag_order", "with_best_rows", "build_parser", "main",
]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m utils.report",
                                description="Markdown tables of the log.txt results beside the paper's numbers.")
    p.add_argument("paths", nargs="+", metavar="LOG_OR_DIR", help="log.txt files, or folders searched for log.txt")
    p.add_argument("--gpu-hours", action="store_true", help="add GPU-hours (wall_s × procs) per experiment and overall")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="also write PNG plots of the tables into DIR (per experiment: results per phase; "
                        "pseudo-label accuracy vs kept fraction)")
    p.add_argument("--out", default=None, help="also write the report to this file (atomically)")
    return p


def main(argv: Sequence[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    if args.plots:  # a folder this process can write, checked before any work
        require_writable_dir(args.plots, "--plots")
    data = read_logs(find_logs(args.paths), find_label_records(args.paths))
    if not data.results and not (args.gpu_hours and data.cost_lines):
        raise UserError(f"{', '.join(args.paths)}: no result lines named <experiment>-<run>__<tag> found; pass the "
                        f"log.txt files the experiment scripts append to")
    text = render(data, args.gpu_hours)
    if args.plots:
        written = write_plots(with_best_rows(data.results.values()), list(data.labels.values()), Path(args.plots))
        text += "\n" + "\n".join(["## Plots", "", *(f"* `{path}`" for path in written), ""])
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text, flush=True)
    return text


if __name__ == "__main__":
    sys.exit(run_cli(main))
