"""Markdown tables of the results in ``log.txt`` files, beside the paper's numbers (SPEC §10).

    python -m utils.report LOG_OR_DIR [LOG_OR_DIR ...] [--gpu-hours] [--out FILE] [--plots DIR]

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
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from utils.errors import UserError, run_cli
from utils.io import write_bytes_atomic, write_text_atomic
from utils.run_log import parse_log_line

RUN_NAME = re.compile(r"^(?P<experiment>(?:(?!__).)+)-(?P<run>\d+)__(?P<tag>(?:(?!__)\S)+)$")
FOR_SEPARATOR = "-for-"  # labelling passes: <labeller run>-for-<target run>
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
    metric: str = "?"     # what the value measures, e.g. "mIoU (whole)", "accuracy"
    eval_set: str = "?"   # the evaluation set it was measured on, e.g. "val", "test"


@dataclass(frozen=True)
class LabelQuality:
    """One labelling pass, for the target run ``experiment-run__tag``; percentages (None = not recorded)."""
    experiment: str
    run: int
    tag: str
    kept: float | None
    pseudo_acc: float | None
    pseudo_miou: float | None


LABEL_FIELDS = ("kept", "pseudo_acc")  # a log line with one of these is a labelling pass, not a result


@dataclass
class LogData:
    results: dict[tuple[str, int, str], Result] = field(default_factory=dict)
    labels: dict[tuple[str, int, str], LabelQuality] = field(default_factory=dict)
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


METRIC_NAMES = {"accuracy": "accuracy", "fine_grained": "fine-grained accuracy", "miou": "mIoU"}


def metric_of(experiment: str, value: float, fields: dict[str, str]) -> str:
    """What a result line's value measures, from its fields (see the module docstring)."""
    if "metric" in fields:
        return METRIC_NAMES.get(fields["metric"], fields["metric"])
    if "protocol" in fields or "pixel_acc" in fields or experiment in SEG_EXPERIMENTS:
        return f"mIoU ({fields['protocol']})" if "protocol" in fields else "mIoU"
    for key in ("accuracy", "fine_grained"):
        try:
            if abs(float(fields[key]) - value) < 1e-3:
                return METRIC_NAMES[key]
        except (KeyError, ValueError):
            continue
    return "?"


def labelling_target(name: str) -> tuple[str, int, str] | None:
    """The run a labelling pass labelled for: ``A-for-B`` → B's parts; else the name's own parts."""
    return split_run_name(name.rsplit(FOR_SEPARATOR, 1)[-1])


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _percent(value: object, total: object = None) -> float | None:
    """A fraction (≤ 1) or a percentage as a percentage; a count with a ``total`` divided by it."""
    number, total = _number(value), _number(total)
    if number is None:
        return None
    if total and number > 1:
        number /= total
    return number * 100 if number <= 1 else number


def label_quality(parts: tuple[str, int, str], fields: dict) -> LabelQuality:
    kept = fields.get("kept", fields.get("kept_fraction"))
    return LabelQuality(*parts, kept=_percent(kept, fields.get("total")), pseudo_acc=_percent(fields.get("pseudo_acc")),
                        pseudo_miou=_percent(fields.get("pseudo_miou")))


def find_label_records(paths: Sequence[str | Path]) -> list[Path]:
    """Every ``labeling.json`` below the given folders."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_dir():
            found.update((p.resolve(), None) for p in sorted(path.rglob("labeling.json")))
    return list(found)


def _flat_record(record: dict) -> dict:
    """The record's top-level values, with the values of nested dicts (one level) where the top has none."""
    flat = {k: v for k, v in record.items() if not isinstance(v, dict)}
    for value in record.values():
        if isinstance(value, dict):
            for k, v in value.items():
                flat.setdefault(k, v)
    return flat


def read_label_records(records: Iterable[Path], data: LogData) -> None:
    """Labelling quality from ``labeling.json`` files (folder name ``<labeller>-for-<target>``)."""
    for path in records:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a labelling record is optional for the report; an unreadable one is left out
        parts = labelling_target(path.parent.name)
        if not isinstance(record, dict) or parts is None:
            continue
        flat = _flat_record(record)
        if any(k in flat for k in (*LABEL_FIELDS, "kept_fraction")):
            data.labels[parts] = label_quality(parts, flat)


def read_logs(log_files: Iterable[Path], label_records: Iterable[Path] = ()) -> LogData:
    data = LogData()
    read_label_records(label_records, data)
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
            if any(k in fields for k in LABEL_FIELDS):
                target = labelling_target(name)
                if target is None:
                    data.other_names += 1
                else:
                    data.labels[target] = label_quality(target, fields)
                continue
            if parts is None:
                data.other_names += 1
                continue
            data.duplicates += parts in data.results
            data.results[parts] = Result(*parts, value, metric_of(parts[0], value, fields),
                                         fields.get("val", fields.get("set", "?")))
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
    best: dict[tuple[str, int], Result] = {}
    for r in results:
        match = PHASE_TAG.match(r.tag)
        if match and match["phase"] == "5" and match["suffix"] in SEG_MODELS:
            key = (r.experiment, r.run)
            if key not in best or r.value > best[key].value:
                best[key] = r
    return results + [Result(e, run, BEST_TAG, r.value, r.metric, r.eval_set) for (e, run), r in best.items()]


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


def experiment_order(experiments: Iterable[str]) -> list[str]:
    present = set(experiments)
    return [e for e in EXPERIMENTS if e in present] + sorted(present - set(EXPERIMENTS))


def _joined(values: Iterable[str]) -> str:
    return " / ".join(sorted(set(values))) or "?"


def experiment_tables(results: Sequence[Result]) -> list[str]:
    out: list[str] = []
    for experiment in experiment_order(r.experiment for r in results):
        rows = []
        for tag in sorted({r.tag for r in results if r.experiment == experiment}, key=tag_order):
            chosen = sorted(select(results, experiment, tag), key=lambda r: r.run)
            rows.append([f"`{tag}`", _joined(r.metric for r in chosen), _joined(r.eval_set for r in chosen),
                         mean_std([r.value for r in chosen]), str(len(chosen)),
                         ", ".join(str(r.run) for r in chosen), _fmt_paper(paper_number(experiment, tag))])
        out += [f"### {experiment}", "",
                *_table(["tag", "metric", "evaluation set", "mean ± std", "n", "runs", "paper"], rows), ""]
    return out


def label_tables(labels: Sequence[LabelQuality]) -> list[str]:
    """Per experiment: for each labelled-for tag, kept fraction, accuracy and mIoU of the kept pseudo
    labels against the ground truth of the unlabelled images (mean ± std over runs)."""
    out: list[str] = []
    for experiment in experiment_order(q.experiment for q in labels):
        rows = []
        for tag in sorted({q.tag for q in labels if q.experiment == experiment}, key=tag_order):
            chosen = sorted((q for q in labels if q.experiment == experiment and q.tag == tag), key=lambda q: q.run)
            cells = [mean_std([v for q in chosen if (v := getattr(q, key)) is not None])
                     for key in ("kept", "pseudo_acc", "pseudo_miou")]
            rows.append([f"`{tag}`", *cells, str(len(chosen)), ", ".join(str(q.run) for q in chosen)])
        header = ["labels for", "kept % (unlabelled set)", "pseudo-label accuracy % (kept, vs GT)",
                  "pseudo-label mIoU (kept, vs GT)", "n", "runs"]
        out += [f"### {experiment}", "", *_table(header, rows), ""]
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
    if data.labels:
        lines += ["## Pseudo-label quality per labelling pass", "",
                  "* kept: the fraction of the unlabelled pixels (CIFAR: images) the pass labelled; accuracy and "
                  "mIoU of those kept labels against the unlabelled images' ground truth (measured only, never "
                  "used in training); rows are the run the labels were made for.", "",
                  *label_tables(list(data.labels.values()))]
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


# ------------------------------------------------------------------------------------------ plots
def _phase_series(results: Sequence[Result], experiment: str) -> dict[str, dict[int, list[Result]]]:
    """``{series: {phase: results}}`` of an experiment's ``p<k>[--suffix]`` tags; series = the suffix
    (model c/i/l/r, ``best``, ``test``; ``""`` for classification training lines)."""
    series: dict[str, dict[int, list[Result]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        match = PHASE_TAG.match(r.tag)
        if r.experiment == experiment and match:
            series[match["suffix"] or ""][int(match["phase"])].append(r)
    return series


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _png(fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def results_figure(results: Sequence[Result], experiment: str):
    """The experiment's result per phase for each series (mean ± std over runs), our pooled
    baseline (p0) and oracle, and the paper's numbers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    series = _phase_series(results, experiment)
    metrics = set()
    for name in sorted(series, key=lambda n: (n == "best", n)):
        phases = sorted(series[name])
        chosen = [series[name][k] for k in phases]
        means = [float(np.mean([r.value for r in rs])) for rs in chosen]
        stds = [_std([r.value for r in rs]) for rs in chosen]
        metric = _joined(r.metric for rs in chosen for r in rs)
        eval_set = _joined(r.eval_set for rs in chosen for r in rs)
        metrics.update(r.metric for rs in chosen for r in rs)
        runs = max(len(rs) for rs in chosen)
        label = f"{'p<k>--' + name if name else 'p<k>'}: {metric} on {eval_set} (n≤{runs})"
        ax.errorbar(phases, means, yerr=stds, marker="o", capsize=3, label=label,
                    linestyle="--" if name == "best" else "-")
    baseline = [r.value for rs in series.values() for r in rs.get(0, []) if r.tag != BEST_TAG]
    if experiment in SEG_EXPERIMENTS and baseline:
        ax.axhline(float(np.mean(baseline)), color="grey", linestyle=":", label=f"our baseline (p0, pooled n={len(baseline)})")
    oracle = [r.value for r in results if r.experiment == experiment and r.tag == "oracle"]
    if oracle:
        ax.axhline(float(np.mean(oracle)), color="green", linestyle=":", label=f"our oracle (all labels, n={len(oracle)})")
    for pattern, number in PAPER.get(experiment, {}).items():
        if pattern == "oracle":
            ax.axhline(number, color="green", linestyle="-.", linewidth=0.8, label=f"paper oracle {number:.2f}")
        elif pattern.startswith("p0"):
            ax.axhline(number, color="black", linestyle="-.", linewidth=0.8, label=f"paper baseline {number:.2f}")
        else:
            phase = int(PHASE_TAG.match(pattern)["phase"]) if PHASE_TAG.match(pattern) else 5
            ax.plot([phase], [number], marker="*", markersize=14, color="red", linestyle="none",
                    label=f"paper `{pattern}` {number:.2f}")
    ax.set_xlabel("phase (0 = supervised baseline)")
    ax.set_ylabel(" / ".join(sorted(metrics)) or "result")
    ax.set_title(f"{experiment}: result per phase (mean ± std over runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def pseudo_figure(labels: Sequence[LabelQuality], experiment: str):
    """Pseudo-label accuracy against the kept fraction, one line per model, points at the phases
    (mean ± std over runs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, dict[int, list[LabelQuality]]] = defaultdict(lambda: defaultdict(list))
    for q in labels:
        match = PHASE_TAG.match(q.tag)
        if q.experiment == experiment and match and q.kept is not None and q.pseudo_acc is not None:
            groups[match["suffix"] or ""][int(match["phase"])].append(q)
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    for name in sorted(groups):
        phases = sorted(groups[name])
        kept = [[q.kept for q in groups[name][k]] for k in phases]
        acc = [[q.pseudo_acc for q in groups[name][k]] for k in phases]
        x, y = [float(np.mean(v)) for v in kept], [float(np.mean(v)) for v in acc]
        ax.errorbar(x, y, xerr=[_std(v) for v in kept], yerr=[_std(v) for v in acc], marker="o", capsize=3,
                    label=f"labels for model {name}" if name else "labels")
        for phase, xi, yi in zip(phases, x, y):
            ax.annotate(f"p{phase}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("kept % of the unlabelled set")
    ax.set_ylabel("pseudo-label accuracy % (kept, vs ground truth)")
    ax.set_title(f"{experiment}: pseudo-label accuracy vs kept fraction per phase")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_plots(results: Sequence[Result], labels: Sequence[LabelQuality], folder: Path) -> list[Path]:
    """``<experiment>.png`` for every experiment with phase results, ``<experiment>_pseudo.png`` where
    labelling passes recorded kept fraction and accuracy; written atomically. Returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for experiment in experiment_order([r.experiment for r in results] + [q.experiment for q in labels]):
        figures = []
        if _phase_series(results, experiment):
            figures.append((folder / f"{experiment}.png", results_figure(results, experiment)))
        pseudo = pseudo_figure(labels, experiment)
        if pseudo is not None:
            figures.append((folder / f"{experiment}_pseudo.png", pseudo))
        for path, fig in figures:
            write_bytes_atomic(path, _png(fig))
            plt.close(fig)
            written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m utils.report",
                                description="Markdown tables of the log.txt results beside the paper's numbers.")
    p.add_argument("paths", nargs="+", metavar="LOG_OR_DIR", help="log.txt files, or folders searched for log.txt")
    p.add_argument("--gpu-hours", action="store_true", help="add GPU-hours (wall_s × procs) per experiment and overall")
    p.add_argument("--out", default=None, help="also write the report to this file (atomically)")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="also write PNG plots of the tables into DIR (per experiment: results per phase; "
                        "pseudo-label accuracy vs kept fraction)")
    return p


def main(argv: Sequence[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise UserError(f"--plots {args.plots}: exists and is not a folder; pass a folder for the PNGs")
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
