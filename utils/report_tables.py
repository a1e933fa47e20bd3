"""The results report's markdown: runs grouped per experiment and tag, mean ± sample std, the paper's
numbers beside ours (:mod:`utils.paper_results`), the pseudo-label quality and GPU-hours tables.

:func:`render` turns one :class:`utils.report_logs.LogData` into the whole report text.
"""
from __future__ import annotations

import fnmatch
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from utils.paper_results import BEST_TAG, EXPERIMENTS, PAPER_TABLES, SEG_BASELINE, paper_number
from utils.report_logs import PHASE_TAG, SEG_MODELS, LabelQuality, LogData, Result

NOTES = [
    f"`{BEST_TAG}` (the DMT row of segmentation experiments): per run, the better of its models' p5 "
    f"results (c/i or l/r); mean ± std over runs.",
    f"Segmentation baselines (`{SEG_BASELINE}`) are compared with the paper's baseline; in the compact "
    f"tables all models' p0 results are pooled (n = runs × models). CIFAR numbers are `p<k>--test` lines.",
    "std is the sample standard deviation (ddof = 1), \"–\" for a single run.",
]


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
    """The experiment's results whose tag matches the fnmatch pattern."""
    return [r for r in results if r.experiment == experiment and fnmatch.fnmatchcase(r.tag, tag_pattern)]


def mean_std(values: Sequence[float]) -> str:
    """``"62.00 ± 2.00"``; ``"62.00 ± –"`` for one value; ``"–"`` for none."""
    if not values:
        return "–"
    std = f"{np.std(values, ddof=1):.2f}" if len(values) > 1 else "–"
    return f"{np.mean(values):.2f} ± {std}"


def _fmt_paper(number: float | None) -> str:
    return "–" if number is None else f"{number:.2f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def experiment_order(experiments: Iterable[str]) -> list[str]:
    """The known experiments in the scripts' order (:data:`EXPERIMENTS`), then any others sorted."""
    present = set(experiments)
    return [e for e in EXPERIMENTS if e in present] + sorted(present - set(EXPERIMENTS))


def joined(values: Iterable[str]) -> str:
    """The distinct values, sorted, joined by " / "; "?" for none."""
    return " / ".join(sorted(set(values))) or "?"


def experiment_tables(results: Sequence[Result]) -> list[str]:
    out: list[str] = []
    for experiment in experiment_order(r.experiment for r in results):
        rows = []
        for tag in sorted({r.tag for r in results if r.experiment == experiment}, key=tag_order):
            chosen = sorted(select(results, experiment, tag), key=lambda r: r.run)
            rows.append([f"`{tag}`", joined(r.metric for r in chosen), joined(r.eval_set for r in chosen),
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

