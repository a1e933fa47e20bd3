"""The plan behind ``./reproduce.sh``: which experiment scripts a paper table needs, with which split
ids / seeds, in which order and after which others (docs/method.md §1.4, §7.3, §10).

    python -m utils.reproduce tables
    python -m utils.reproduce plan TABLE [--splits ID ...] [--runs DIR]        # tab-separated, for the shell
    python -m utils.reproduce show TABLE [--splits ...] [--runs DIR] [--slots S,...] [--bench FILE]
    python -m utils.reproduce job-env SCRIPT ID [--runs DIR]                  # `export` lines of one job
    python -m utils.reproduce summary TABLE [--splits ...] [--runs DIR] [--status FILE]

The tables, jobs and dependencies are :mod:`utils.reproduce_plan`; the GPU-hours of each job
(``--bench FILE``: the JSON of ``python -m bench.segmentation --json FILE``, else the paper's
≈ 8 h per VOC 1/20 DMT run scaled by pixel work) are :mod:`utils.reproduce_hours`. Here: the
schedule the shell would run on its slots (``show``), the results table of a table's runs
(``summary``) and the command line.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Sequence

from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.reproduce_hours import Projector
from utils.reproduce_plan import ALL, REPO, TABLES, Job, build_plan, experiment_table, job_env


# -------------------------------------------------------------------------------------- schedule
def simulate(jobs: Sequence[Job], slots: Sequence[str], hours: dict[str, float | None]) -> dict[str, tuple[int, float, float]]:
    """The shell's schedule (first ready job in plan order whenever a slot frees), job → (slot,
    start, end) in hours; jobs without a projection count 1 h so that the order still shows."""
    free_at = [0.0] * len(slots)
    done: dict[str, float] = {}
    placed: dict[str, tuple[int, float, float]] = {}
    pending = list(jobs)
    while pending:
        slot = min(range(len(slots)), key=lambda s: free_at[s])
        now = free_at[slot]
        ready = [j for j in pending if all(d in done and done[d] <= now for d in j.deps)]
        if not ready:  # wait for the next dependency to finish
            free_at[slot] = min(done[d] for j in pending for d in j.deps if d in done and done[d] > now)
            continue
        job = ready[0]
        pending.remove(job)
        length = hours.get(job.name) or 1.0
        placed[job.name] = (slot, now, now + length)
        done[job.name] = now + length
        free_at[slot] = now + length
    return placed


def show(table_name: str, jobs: Sequence[Job], title: str, slots: Sequence[str], projector: Projector) -> str:
    hours = {j.name: projector.hours(j.experiment) for j in jobs}
    placed = simulate(jobs, slots, hours)
    lines = [f"Plan for '{table_name}': {title}",
             f"{len(jobs)} experiment(s) on {len(slots)} slot(s) ({', '.join(slot_label(s) for s in slots)}), "
             f"in this order (each starts when a slot is free and its dependencies have finished):", ""]
    for n, job in enumerate(jobs, 1):
        slot, start, _ = placed[job.name]
        h = hours[job.name]
        cost = f"{h:.1f} GPU-h" if h is not None else "GPU-h not projected"
        lines.append(f"{n:3d}. {job.name:18s} slot {slot} ({slot_label(slots[slot])})  "
                     f"after: {', '.join(job.deps) or '-'}  [{cost}]")
        lines.append(f"       {job.command()} > {job.log} 2>&1")
    known = [h for h in hours.values() if h is not None]
    lines.append("")
    if known:
        wall = max(end for _, _, end in placed.values())
        missing = len(jobs) - len(known)
        lines.append(f"Estimated GPU-hours: {sum(known):.1f} in all"
                     + (f" ({missing} job(s) not projected)" if missing else "")
                     + (f"; about {wall:.1f} h of wall time on {len(slots)} slot(s)" if not missing else "")
                     + f" — {projector.source}"
                     + ("; one GPU per experiment assumed" if any("+" in slot for slot in slots) else "") + ".")
    else:
        lines.append("Estimated GPU-hours: not projected (no measured rate for these jobs).")
    lines.append(f"Then: python -m utils.report on the jobs' output folders (report in "
                 f"{jobs[0].out.parent / f'report-{table_name}.md' if jobs else '-'}).")
    return "\n".join(lines)


def slot_label(slot: str) -> str:
    if slot == "cpu":
        return "CPU"
    return f"GPU {slot}" if "+" not in slot else f"GPUs {slot.replace('+', ',')}"


# --------------------------------------------------------------------------------------- summary
def summary(table_name: str, jobs: Sequence[Job], status_file: str | None) -> str:
    """One row per job (experiment × split id / seed): its status, its phase-0 and last-phase
    results from its log.txt, and its log file."""
    from utils.report import read_logs  # the same parser as the report
    status: dict[str, str] = {}
    if status_file and Path(status_file).is_file():
        for line in Path(status_file).read_text().splitlines():
            if "\t" in line:
                name, state = line.split("\t", 1)
                status[name] = state
    rows = []
    for job in jobs:
        log = job.out / "log.txt"
        results = read_logs([log]).results if log.is_file() else {}
        mine = {tag: r.value for (exp, run, tag), r in results.items() if exp == job.experiment and run == job.id}
        rows.append([job.experiment, str(job.id), status.get(job.name, "not run" if status_file else "–"),
                     _phase_value(mine, 0), *_last_phase(mine), f"`{job.log}`"])
    head = ["experiment", "split id / seed", "status", "phase 0 (best model)", "last phase", "result (best model)", "log"]
    return "\n".join([f"## Runs of '{table_name}' (one row per experiment and split id / seed)", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *("| " + " | ".join(r) + " |" for r in rows), ""])


def _phase_values(results: dict[str, float], phase: int) -> list[float]:
    """A phase's values: segmentation p<k>--<model>, CIFAR p<k>--test (the test accuracy)."""
    out = []
    for tag, value in results.items():
        m = re.fullmatch(r"p(\d+)--([cilr]|test)", tag)
        if m and int(m[1]) == phase:
            out.append(value)
    return out


def _phase_value(results: dict[str, float], phase: int) -> str:
    values = _phase_values(results, phase)
    return f"{max(values):.2f}" if values else "–"


def _last_phase(results: dict[str, float]) -> list[str]:
    phases = [int(m[1]) for tag in results if (m := re.fullmatch(r"p(\d+)--([cilr]|test)", tag))]
    if not phases or max(phases) == 0:
        return ["–", "–"]
    return [f"p{max(phases)}", _phase_value(results, max(phases))]


# ------------------------------------------------------------------------------------------- cli
def tables_text() -> str:
    lines = []
    for t in TABLES.values():
        ids = " ".join(map(str, t.default_ids))
        lines.append(f"  {t.name:13s} {t.title}\n  {'':13s} scripts: {', '.join(t.experiments)}; {t.id_word}s {ids}")
    lines.append(f"  {ALL:13s} every table above, in this order")
    lines.append(f"  {'EXPERIMENT':13s} one experiment script's name (e.g. dmt-voc-20): that row only")
    return "\n".join(lines)


def parse_slots(text: str) -> list[str]:
    slots = [s.strip() for s in text.split(",") if s.strip()]
    if not slots or any(s != "cpu" and not re.fullmatch(r"\d+(\+\d+)*", s) for s in slots):
        raise UserError(f"--gpus {text}: give GPU indices (several joined by '+') and/or 'cpu', comma-separated "
                        f"(e.g. 0,1,2,3 or 0+1,2+3 or cpu,cpu)")
    return slots


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m utils.reproduce", description="The plan of ./reproduce.sh.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("tables")
    for name in ("plan", "show", "summary"):
        s = sub.add_parser(name)
        s.add_argument("table")
        s.add_argument("--splits", type=int, nargs="+", default=None)
        s.add_argument("--runs", default=str(REPO / "runs"))
        if name == "show":
            s.add_argument("--slots", default="cpu")
            s.add_argument("--bench", default=None)
        if name == "summary":
            s.add_argument("--status", default=None)
            s.add_argument("--out", default=None)
    s = sub.add_parser("job-env")
    s.add_argument("script")
    s.add_argument("id", type=int)
    s.add_argument("--runs", default=str(REPO / "runs"))
    args = p.parse_args(argv)

    if args.cmd == "tables":
        print(tables_text())
        return 0
    runs = Path(os.path.abspath(args.runs))
    if args.cmd == "job-env":
        experiment = Path(args.script).name.removesuffix(".sh")
        if experiment_table(experiment) is None:
            raise UserError(f"{args.script}: not one of the experiment scripts; pass e.g. segmentation/dmt-voc-20.sh")
        for key, value in job_env(experiment, args.id, runs).items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    title, jobs = build_plan(args.table, args.splits, runs)
    if args.cmd == "plan":
        for job in jobs:
            env = " ".join(f"{k}={v}" for k, v in job.env.items())
            if any(c in str(x) for x in (job.out, job.log) for c in " \t\n"):
                raise UserError(f"--out {runs}: the output folder must have no spaces or tabs in its path")
            print("\t".join([job.name, ",".join(job.deps) or "-", str(job.script), str(job.id), str(job.log), env]))
    elif args.cmd == "show":
        print(show(args.table, jobs, title, parse_slots(args.slots), Projector(args.bench)))
    else:
        text = summary(args.table, jobs, args.status)
        if args.out:
            from utils.io import write_text_atomic
            write_text_atomic(args.out, text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
