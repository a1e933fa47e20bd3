"""Reading the results report's input: ``log.txt`` lines and ``labeling.json`` records.

Run names are ``<experiment>-<run>__<tag>`` and labelling passes ``<labeller run>-for-<target run>``
(see :mod:`utils.report` for the convention and what is counted, skipped or kept). Lines are read with
:func:`utils.run_log.parse_log_line`; the result of the reading is one :class:`LogData`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from utils.errors import UserError
from utils.paper_results import SEG_EXPERIMENTS
from utils.run_log import parse_log_line

RUN_NAME = re.compile(r"^(?P<experiment>(?:(?!__).)+)-(?P<run>\d+)__(?P<tag>(?:(?!__)\S)+)$")
FOR_SEPARATOR = "-for-"  # labelling passes: <labeller run>-for-<target run>
PHASE_TAG = re.compile(r"^p(?P<phase>\d+)(?:--(?P<suffix>.+))?$")
SEG_MODELS = ("c", "i", "l", "r")


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
