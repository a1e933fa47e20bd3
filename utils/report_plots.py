"""The results report's figures (matplotlib, Agg): ``python -m utils.report ... --plots DIR``.

``<experiment>.png``: the result of every phase for each model (mean ± std over runs) against our
baseline and oracle and the paper's numbers; ``<experiment>_pseudo.png``: pseudo-label accuracy against
the kept fraction per phase, where labelling passes recorded them. Same numbers as the tables.
"""
from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np

from utils.io import write_bytes_atomic
from utils.paper_results import BEST_TAG, PAPER, SEG_EXPERIMENTS
from utils.report_logs import PHASE_TAG, LabelQuality, Result
from utils.report_tables import experiment_order, joined


def _pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: the tables do not need it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


Row = TypeVar("Row", Result, LabelQuality)


def _phase_series(rows: Sequence[Row], experiment: str) -> dict[str, dict[int, list[Row]]]:
    """``{series: {phase: rows}}`` of an experiment's ``p<k>[--suffix]`` tags; series = the suffix
    (model c/i/l/r, ``best``, ``test``; ``""`` for classification training lines)."""
    series: dict[str, dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        match = PHASE_TAG.match(r.tag)
        if r.experiment == experiment and match:
            series[match["suffix"] or ""][int(match["phase"])].append(r)
    return series


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def results_figure(results: Sequence[Result], experiment: str):
    """The experiment's result per phase for each series (mean ± std over runs), our pooled
    baseline (p0) and oracle, and the paper's numbers."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    series = _phase_series(results, experiment)
    metrics = set()
    for name in sorted(series, key=lambda n: (n == "best", n)):
        phases = sorted(series[name])
        chosen = [series[name][k] for k in phases]
        means = [float(np.mean([r.value for r in rs])) for rs in chosen]
        stds = [_std([r.value for r in rs]) for rs in chosen]
        metric = joined(r.metric for rs in chosen for r in rs)
        eval_set = joined(r.eval_set for rs in chosen for r in rs)
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
    plt = _pyplot()
    groups = _phase_series([q for q in labels if q.kept is not None and q.pseudo_acc is not None], experiment)
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
    plt = _pyplot()
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


