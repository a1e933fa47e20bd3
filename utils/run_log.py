"""Run logging: the tqdm progress bar, TensorBoard scalars / images / histograms, the run's config as JSON, one ``log.txt`` line per finished run.

``log.txt`` keeps the original's ``<exp>: <best metric>`` shape at the start of each line so old
parsers still work; further fields follow as `` | key=value`` pairs, e.g.::

    dmt-voc-20-1__p1--c: 69.12 | final=68.70 | protocol=whole | wall_s=812.4 | images_per_s=95.1 | peak_mem_gb=5.21 | device=NVIDIA H100 | procs=1

:func:`parse_log_line` reads such lines back (``utils/report.py`` uses it).
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from utils.cli import launch_rank
from utils.io import append_line, write_text_atomic


def progress(iterable=None, **kwargs):
    """tqdm that stays quiet off the main rank and prints sparsely when stderr is not a terminal."""
    from tqdm import tqdm

    tty = sys.stderr.isatty() or os.environ.get("DMT_TTY") == "1"  # under utils.torchrun stderr is a pipe
    kwargs.setdefault("mininterval", 0.5 if tty else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=launch_rank() != 0 or os.environ.get("DMT_NO_PROGRESS") == "1", **kwargs)


def format_log_line(exp_name: str, best: float, **fields: Any) -> str:
    parts = [f"{exp_name}: {_fmt(best)}"]
    parts += [f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None]
    return " | ".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:.6g}"
    return str(value).replace("|", "/").replace("\n", " ")


def parse_log_line(line: str) -> tuple[str, float, dict[str, str]] | None:
    """``(exp_name, best, {key: value})`` for a log.txt line, or None for lines of another shape."""
    line = line.strip()
    head, *rest = line.split(" | ")
    if ": " not in head:
        return None
    name, _, value = head.rpartition(": ")
    try:
        best = float(value)
    except ValueError:
        return None
    fields = {}
    for part in rest:
        key, sep, val = part.partition("=")
        if sep:
            fields[key.strip()] = val.strip()
    return name, best, fields


def has_log_line(log_file: str | os.PathLike, exp_name: str) -> bool:
    path = Path(log_file)
    if not path.is_file():
        return False
    with open(path, encoding="utf-8") as f:
        return any((p := parse_log_line(line)) is not None and p[0] == exp_name for line in f)


def record_run(log_file: str | os.PathLike, exp_name: str, best: float, **fields: Any) -> None:
    """Append the run's line to ``log_file`` unless a line for ``exp_name`` is already there."""
    if not has_log_line(log_file, exp_name):
        append_line(log_file, format_log_line(exp_name, best, **fields))


def save_config(path: str | os.PathLike, config: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(dict(config), indent=2, sort_keys=True, default=str) + "\n")


class RunLogger:
    """TensorBoard scalars, images, figures and histograms under ``<log_dir>/<exp_name>``; a no-op on
    non-main ranks."""

    def __init__(self, log_dir: str | os.PathLike, exp_name: str, enabled: bool = True) -> None:
        self.path = Path(log_dir) / exp_name
        self.enabled = enabled
        self._writer = None

    @property
    def writer(self):
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(str(self.path))
        return self._writer

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.enabled:
            self.writer.add_scalar(tag, float(value), step)

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        for tag, value in values.items():
            self.scalar(prefix + tag, value, step)

    def figure(self, tag: str, figure, step: int, close: bool = True) -> None:
        """A matplotlib figure as an image (closed afterwards unless ``close=False``)."""
        if self.enabled:
            self.writer.add_figure(tag, figure, step, close=close)

    def image(self, tag: str, image, step: int) -> None:
        """An RGB image: uint8 (or float in [0, 1]) array/tensor of shape 3×H×W."""
        if self.enabled:
            self.writer.add_image(tag, image, step, dataformats="CHW")

    def histogram(self, tag: str, counts, step: int, low: float = 0.0, high: float = 1.0) -> None:
        """A histogram from precomputed counts of equal-width bins over [low, high].

        TensorBoard keeps bucket right edges and counts; min/max/sum/sum of squares are taken from
        the bin centres (the raw values are not kept). Nothing is written for all-zero counts.
        """
        if not self.enabled:
            return
        import numpy as np
        counts = np.asarray(counts.detach().cpu() if hasattr(counts, "detach") else counts, dtype=np.float64)
        total = float(counts.sum())
        if total <= 0:
            return
        edges = np.linspace(low, high, len(counts) + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        used = np.flatnonzero(counts)
        self.writer.add_histogram_raw(tag, min=float(edges[used[0]]), max=float(edges[used[-1] + 1]), num=total,
                                      sum=float((counts * centres).sum()),
                                      sum_squares=float((counts * centres ** 2).sum()),
                                      bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(),
                                      global_step=step)

    def train_interval(self, sums: Mapping, count: int, step: int, lr: float) -> dict[str, float]:
        """A logging interval of training statistics: each 0-d sum's mean over the ``count`` steps as
        ``train/<name>``, each 1-D sum (bin counts over [0, 1]) as a histogram, and ``train/lr``;
        returns the means. The host reads the sums here, once per interval."""
        means = {k: float(v) / count for k, v in sums.items() if v.dim() == 0}
        self.scalars(means, step, prefix="train/")
        for key, counts in sums.items():
            if counts.dim() == 1:
                self.histogram(f"train/{key}", counts, step)
        self.scalar("train/lr", lr, step)
        return means

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def done_path(out_dir: str | os.PathLike, exp_name: str) -> Path:
    return Path(out_dir) / f"{exp_name}.done.json"


def finish_run(out_dir: str | os.PathLike, log_file: str | os.PathLike, exp_name: str, best: float,
               **fields: Any) -> None:
    """Mark a run finished: its ``.done.json`` record first, then its log.txt line.

    Call only once every output of the run is in place. The record is what makes a run "finished"
    for :func:`finished_run`, so a process killed between the two writes is repaired on the next
    call instead of losing or duplicating the log line.
    """
    record = {"exp_name": exp_name, "best": best, **fields}
    write_text_atomic(done_path(out_dir, exp_name), json.dumps(record, indent=2, default=str) + "\n")
    record_run(log_file, exp_name, best, **fields)


def finished_run(out_dir: str | os.PathLike, log_file: str | os.PathLike, exp_name: str) -> dict | None:
    """The record of a finished run (repairing a missing log.txt line), or None if it is not finished."""
    path = done_path(out_dir, exp_name)
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    fields = {k: v for k, v in record.items() if k not in ("exp_name", "best")}
    record_run(log_file, exp_name, record["best"], **fields)
    return record
