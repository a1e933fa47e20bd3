"""Markdown tables of the results in ``log.txt`` files, beside the paper's numbers (SPEC §10).

    python -m utils.report LOG_OR_DIR [LOG_OR_DIR ...] [--gpu-hours] [--out FILE]

Reads each given ``log.txt`` and every ``log.txt`` below each given folder. Lines are read with
:func:`utils.run_log.parse_log_line`; lines of another shape, and run names that do not follow the
convention below, are skipped (and counted). Run names are ``<experiment>-<run>__<tag>``: ``run``
is the split id (segmentation) or the seed (classification); ``tag`` is ``p<k>--<model>`` (phase
k = 0 baseline ... 5, model c/i/l/r), ``oracle``, or for classification ``p<k>`` (a training run)
and ``p<k>--test`` (that phase's EMA on the test set). The same run found twice keeps its last line.

Output:

* one table per experiment: for each tag, mean ± sample std (ddof = 1; "–" for one run), the
  number of runs, the run ids and the paper's number where SPEC §10 has one. Segmentation
  experiments get a derived row ``p5--best``: per run, the better of its models' p5 results
  (this is what the paper's DMT row is compared with); baselines are the ``p0--<model>`` rows;
* a compact table per dataset laid out as in the paper (columns = label ratios), ours and the
  paper's rows;
* with ``--gpu-hours``: Σ wall_s × procs / 3600 per experiment and device and overall, over the lines
  that carry ``wall_s`` (``procs`` missing counts as 1).
"""
from __future__ import annotations

import argparse
import fnmatch
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from utils.errors import UserError, run_cli
from utils.io import write_text_atomic
from utils.run_log import parse_log_line

RUN_NAME = re.compile(r"^(?P<experiment>.+)-(?P<run>\d+)__(?P<tag>\S+)$")
PHASE_TAG = re.compile(r"^p(?P<phase>\d+)(?:--(?P<suffix>.+))?$")
BEST_TAG = "p5--best"
SEG_MODELS = ("c", "i", "l", "r")

SEG_EXPERIMENTS = ("dmt-voc-106", "dmt-voc-50", "dmt-voc-20", "dmt-voc-8", "dmt-city-30", "dmt-city-8",
                   "dmt-voc-sbd", "abl-baseline", "abl-cbst", "abl-dst", "abl-naive", "abl-flip", "abl-online")
CLS_EXPERIMENTS = ("cl-c10-4000", "dmt-c10-4000", "cl-c10-1000", "dmt-c10-1000")
EXPERIMENTS = SEG_EXPERIMENTS + CLS_EXPERIMENTS

# SPEC §10, per experiment: {tag pattern (fnmatch): the paper's number}.
_SEG_BASELINE = "p0--[cilr]"
PAPER: dict[str, dict[str, float]] = {
    "dmt-voc-106": {_SEG_BASELINE: 46.66, BEST_TAG: 63.04},
    "dmt-voc-50": {_SEG_BASELINE: 55.62, BEST_TAG: 67.15},
    "dmt-voc-20": {_SEG_BASELINE: 62.29, BEST_TAG: 69.92},
    "dmt-voc-8": {_SEG_BASELINE: 67.37, BEST_TAG: 72.70},
    "dmt-city-30": {_SEG_BASELINE: 49.54, BEST_TAG: 54.80},
    "dmt-city-8": {_SEG_BASELINE: 59.65, BEST_TAG: 63.03},
    "dmt-voc-sbd": {_SEG_BASELINE: 72.10, BEST_TAG: 74.85, "oracle": 74.75},
    "cl-c10-4000": {"p0--test": 86.08, "p5--test": 94.02},
    "dmt-c10-4000": {"p0--test": 86.08, "p5--test": 94.21},
}

# Compact tables as the paper lays them out: (title, metric, columns, rows); a cell is
# (experiment, tag pattern) for ours and the paper's number (None = no number in the paper).
Cell = tuple[tuple[str, str] | None, float | None]
PAPER_TABLES: list[tuple[str, str, list[str], list[tuple[str, list[Cell]]]]] = [
    ("PASCAL VOC 2012", "val mIoU", ["1/106 (100)", "1/50", "1/20", "1/8", "full"], [
        ("Baseline (DeepLab-v2)", [(("dmt-voc-106", _SEG_BASELINE), 46.66), (("dmt-voc-50", _SEG_BASELINE), 55.62),
                                   (("dmt-voc-20", _SEG_BASELINE), 62.29), (("dmt-voc-8", _SEG_BASELINE), 67.37),
                                   (("dmt-voc-sbd", "oracle"), 74.75)]),
        ("DMT", [(("dmt-voc-106", BEST_TAG), 63.04), (("dmt-voc-50", BEST_TAG), 67.15),
                 (("dmt-voc-20", BEST_TAG), 69.92), (("dmt-voc-8", BEST_TAG), 72.70),
                 (("dmt-voc-sbd", "oracle"), 74.75)]),
    ]),
    ("Cityscapes", "val mIoU", ["1/30 (100)", "1/8", "full"], [
        ("Baseline (DeepLab-v2)", [(("dmt-city-30", _SEG_BASELINE), 49.54), (("dmt-city-8", _SEG_BASELINE), 59.65),
                                   (None, 68.16)]),
        ("DMT", [(("dmt-city-30", BEST_TAG), 54.80), (("dmt-city-8", BEST_TAG), 63.03), (None, 68.16)]),
    ]),
    ("VOC 2012 + SBD", "val mIoU", ["1,464 labels", "+ 9,118 SBD labels (oracle)", "+ DMT on the SBD images"], [
        ("mIoU", [(("dmt-voc-sbd", _SEG_BASELINE), 72.10), (("dmt-voc-sbd", "oracle"), 74.75),
                    (("dmt-voc-sbd", BEST_TAG), 74.85)]),
    ]),
    ("CIFAR-10", "test accuracy", ["1,000 labels", "4,000 labels"], [
        ("Baseline (WRN-28-2)", [(("cl-c10-1000", "p0--test"), None), (("cl-c10-4000", "p0--test"), 86.08)]),
        ("Curriculum Labeling", [(("cl-c10-1000", "p5--test"), None), (("cl-c10-4000", "p5--test"), 94.02)]),
        ("DMT", [(("dmt-c10-1000", "p5--test"), None), (("dmt-c10-4000", "p5--test"), 94.21)]),
    ]),
]

NOTES = [
    f"`{BEST_TAG}` (the DMT row of segmentation experiments): per run, the better of its models' p5 "
    f"results (c/i or l/r); mean ± std over runs.",
    f"Segmentation baselines (`{_SEG_BASELINE}`) are compared with the paper's baseline; in the compact "
    f"tables all models' p0 results are pooled (n = runs × models). CIFAR numbers are `p<k>--test` lines.",
    "std is the sample standard deviation (ddof = 1), \"–\" for a single run.",
]


@dataclass(frozen=True)
class Result:
    experiment: str
    run: int
    tag: str
    value: float


@dataclass
class LogData:
    results: dict[tuple[str, int, str], Result] = field(default_factory=dict)
    cost_lines: list[tuple[str, str, float]] = field(default_factory=list)  # (experiment, device, GPU-seconds)
    files: int = 0
    other_shape: int = 0
    other_names: int = 0
    duplicates: int = 0
    bad_cost: int = 0


def split_run_name(name: str) -> tuple[str, int, str] | None:
    """``"dmt-voc-20-1__p5--c"`` → ``("dmt-voc-20", 1, "p5--c")``; None if the name is not of that form."""
    match = RUN_NAME.match(name)
    if match is None:
        return None
    return match["experiment"], int(match["run"]), match["tag"]


def find_logs(paths: Sequence[str | Path]) -> list[Path]:
    """Every given file, and every ``log.txt`` below every given folder, each once, in order."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_dir():
            logs = sorted(path.rglob("log.txt"))
            if not logs:
                raise UserError(f"{path}: no log.txt below this folder; pass the folder the runs wrote into")
        elif path.is_file():
            logs = [path]
        else:
            raise UserError(f"{path}: no such file or folder; pass log.txt files or folders holding them")
        found.update((p.resolve(), None) for p in logs)
    return list(found)


def _cost_seconds(fields: dict[str, str]) -> float | None:
    """wall_s × procs (procs missing = 1); None if there is no usable wall_s."""
    try:
        seconds = float(fields["wall_s"]) * float(fields.get("procs", "1"))
    except (KeyError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def read_logs(log_files: Iterable[Path]) -> LogData:
    data = LogData()
    for path in log_files:
        data.files += 1
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            raise UserError(f"{path}: cannot read ({exc.strerror}); check the file and its permissions") from None
        for line in lines:
            parsed = parse_log_line(line) if line.strip() else None
            if parsed is None:
                data.other_shape += bool(line.strip())
                continue
            name, value, fields = parsed
            parts = split_run_name(name)
            if "wall_s" in fields:
                seconds = _cost_seconds(fields)
                if seconds is None:
                    data.bad_cost += 1
                else:
                    experiment = parts[0] if parts else "(other run names)"
                    data.cost_lines.append((experiment, fields.get("device", "?"), seconds))
            if parts is None:
                data.other_names += 1
                continue
            data.duplicates += parts in data.results
            data.results[parts] = Result(*parts, value)
    return data


def tag_order(tag: str) -> tuple:
    """p0 rows first, by phase then model (``p5--best`` after the p5 models), then oracle, then the rest."""
    match = PHASE_TAG.match(tag)
    if match:
        suffix = match["suffix"] or ""
        return 0, int(match["phase"]), suffix == "best", suffix
    return (1, 0, False, "") if tag == "oracle" else (2, 0, False, tag)


def with_best_rows(results: Iterable[Result]) -> list[Result]:
    """The results plus, per segmentation run with p5 models, a ``p5--best`` result (their maximum)."""
    results = list(results)
    best: dict[tuple[str, int], float] = {}
    for r in results:
        match = PHASE_TAG.match(r.tag)
        if match and match["phase"] == "5" and match["suffix"] in SEG_MODELS:
            key = (r.experiment, r.run)
            best[key] = max(best.get(key, -math.inf), r.value)
    return results + [Result(e, run, BEST_TAG, v) for (e, run), v in best.items()]


def select(results: Iterable[Result], experiment: str, tag_pattern: str) -> list[Result]:
    return [r for r in results if r.experiment == experiment and fnmatch.fnmatchcase(r.tag, tag_pattern)]


def mean_std(values: Sequence[float]) -> str:
    """``"62.00 ± 2.00"``; ``"62.00 ± –"`` for one value; ``"–"`` for none."""
    if not values:
        return "–"
    std = f"{np.std(values, ddof=1):.2f}" if len(values) > 1 else "–"
    return f"{np.mean(values):.2f} ± {std}"


def paper_number(experiment: str, tag: str) -> float | None:
    for pattern, number in PAPER.get(experiment, {}).items():
        if fnmatch.fnmatchcase(tag, pattern):
            return number
    return None


def _fmt_paper(number: float | None) -> str:
    return "–" if number is None else f"{number:.2f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def experiment_tables(results: Sequence[Result]) -> list[str]:
    out: list[str] = []
    present = {r.experiment for r in results}
    for experiment in [e for e in EXPERIMENTS if e in present] + sorted(present - set(EXPERIMENTS)):
        rows = []
        for tag in sorted({r.tag for r in results if r.experiment == experiment}, key=tag_order):
            chosen = sorted(select(results, experiment, tag), key=lambda r: r.run)
            rows.append([f"`{tag}`", mean_std([r.value for r in chosen]), str(len(chosen)),
                         ", ".join(str(r.run) for r in chosen), _fmt_paper(paper_number(experiment, tag))])
        out += [f"### {experiment}", "", *_table(["tag", "mean ± std", "n", "runs", "paper"], rows), ""]
    return out


def paper_tables(results: Sequence[Result]) -> list[str]:
    out: list[str] = []
    for title, metric, columns, rows in PAPER_TABLES:
        ours_rows, paper_rows, any_result = [], [], False
        for label, cells in rows:
            ours = []
            for source, _ in cells:
                values = [r.value for r in select(results, *source)] if source else []
                any_result |= bool(values)
                ours.append(f"{mean_std(values)} (n={len(values)})" if values else "–")
            ours_rows.append([f"{label} (ours)", *ours])
            paper_rows.append([f"{label} (paper)", *(_fmt_paper(number) for _, number in cells)])
        if any_result:
            body = [row for pair in zip(ours_rows, paper_rows) for row in pair]
            out += [f"### {title} ({metric})", "", *_table(["method", *columns], body), ""]
    return out


def gpu_hours_table(cost_lines: Sequence[tuple[str, str, float]]) -> list[str]:
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for experiment, device, seconds in cost_lines:
        groups[(experiment, device)].append(seconds)
    order = {e: i for i, e in enumerate(EXPERIMENTS)}
    keys = sorted(groups, key=lambda k: (order.get(k[0], len(order)), k))
    rows = [[e, d, str(len(groups[(e, d)])), f"{sum(groups[(e, d)]) / 3600:.2f}"] for e, d in keys]
    total = [s for _, _, s in cost_lines]
    rows.append(["**total**", "", str(len(total)), f"**{sum(total) / 3600:.2f}**"])
    return _table(["experiment", "device", "log lines", "GPU-hours"], rows)


def render(data: LogData, gpu_hours: bool) -> str:
    results = with_best_rows(data.results.values())
    lines = ["# DMT results", "",
             f"From {data.files} log file(s): {len(data.results)} runs; skipped {data.other_shape} line(s) of another "
             f"shape and {data.other_names} with other run names; {data.duplicates} repeated run(s) (last line kept).",
             "", *(f"* {note}" for note in NOTES), ""]
    if results:
        lines += ["## Paper tables", "", *paper_tables(results), "## Per experiment", "", *experiment_tables(results)]
    if gpu_hours:
        lines += ["## GPU hours (Σ wall_s × procs / 3600)", ""]
        if data.cost_lines:
            lines += gpu_hours_table(data.cost_lines)
        else:
            lines.append("No log line carries `wall_s`.")
        if data.bad_cost:
            lines.append(f"\n{data.bad_cost} line(s) with an unreadable wall_s/procs were left out.")
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m utils.report",
                                description="Markdown tables of the log.txt results beside the paper's numbers.")
    p.add_argument("paths", nargs="+", metavar="LOG_OR_DIR", help="log.txt files, or folders searched for log.txt")
    p.add_argument("--gpu-hours", action="store_true", help="add GPU-hours (wall_s × procs) per experiment and overall")
    p.add_argument("--out", default=None, help="also write the report to this file (atomically)")
    return p


def main(argv: Sequence[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    data = read_logs(find_logs(args.paths))
    if not data.results and not (args.gpu_hours and data.cost_lines):
        raise UserError(f"{', '.join(args.paths)}: no result lines named <experiment>-<run>__<tag> found; pass the "
                        f"log.txt files the experiment scripts append to")
    text = render(data, args.gpu_hours)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text, flush=True)
    return text


if __name__ == "__main__":
    sys.exit(run_cli(main))
