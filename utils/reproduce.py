"""The plan behind ``./reproduce.sh``: which experiment scripts a paper table needs, with which split
ids / seeds, in which order and after which others (docs/method.md §1.4, §7.3, §10).

    python -m utils.reproduce tables
    python -m utils.reproduce plan TABLE [--splits ID ...] [--runs DIR]        # tab-separated, for the shell
    python -m utils.reproduce show TABLE [--splits ...] [--runs DIR] [--slots S,...] [--bench FILE]
    python -m utils.reproduce job-env SCRIPT ID [--runs DIR]                  # `export` lines of one job
    python -m utils.reproduce summary TABLE [--splits ...] [--runs DIR] [--status FILE]

A job is one experiment script with one split id (segmentation) or seed (CIFAR-10): its outputs go
to ``RUNS/<experiment>-<id>`` (the scripts' own default under ``runs/``), its stdout/stderr to
``RUNS/logs/<experiment>-<id>.log``. Dependencies: every ablation needs ``abl-baseline`` of the
same split id (it copies its snapshots), a CIFAR DMT run needs the CL run of the same seed (it
reuses its phase-0 model, docs/method.md §1.2). The shell runs the jobs in plan order, each as soon
as a slot is free and its dependencies have finished.

GPU-hours: with ``--bench FILE`` (the JSON of ``python -m bench.segmentation --json FILE``), each
segmentation job is projected from the measured rates of the project's own step ("ours") with
:func:`bench.run_projection.project` and the job's counts (epochs, batches, val intervals and ratios
read from the script, environment overrides honoured; set sizes of docs/method.md §5). Without it, the
projection scales the paper's one figure — ≈ 8 h for a VOC 1/20 DMT run on one RTX 2080 Ti
(docs/method.md §10) — by the pixel work of each job (training images × crop pixels × 3 for
forward + backward; labelling 2 and evaluation 1 forward per image at the test size). CIFAR-10 jobs
have no measured rate (the benchmark covers segmentation only) and are not projected.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from bench.run_projection import RunPlan, project
from utils.errors import UserError, run_cli

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------- tables
SEG_SPLITS = (0, 1, 2)          # docs/method.md §10: segmentation numbers average split ids 0-2
CIFAR_SEEDS = (1, 2, 3, 4, 5)   # and CIFAR-10 numbers seeds 1-5 (§5.5)
ABLATIONS = ("abl-cbst", "abl-dst", "abl-naive", "abl-flip", "abl-online")


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    experiments: tuple[str, ...]      # in plan order (dependencies first)
    default_ids: tuple[int, ...]
    allowed_ids: tuple[int, ...]
    id_word: str = "split id"


TABLES: dict[str, Table] = {t.name: t for t in (
    Table("voc", "PASCAL VOC 2012: baselines (phase 0) and DMT, 1/106 1/50 1/20 1/8",
          ("dmt-voc-106", "dmt-voc-50", "dmt-voc-20", "dmt-voc-8"), SEG_SPLITS, SEG_SPLITS),
    Table("city", "Cityscapes: baselines (phase 0) and DMT, 1/30 1/8",
          ("dmt-city-30", "dmt-city-8"), SEG_SPLITS, SEG_SPLITS),
    Table("sbd", "VOC 2012 + SBD: 1,464 labels, the all-labels oracle (also VOC's 'full' column), DMT on the SBD images",
          ("dmt-voc-sbd",), (0,), (0,)),
    Table("ablations", "Ablations on VOC 1/50 (abl-baseline first): CBST, DST, naive, flip, online",
          ("abl-baseline",) + ABLATIONS, (2,), SEG_SPLITS),
    Table("cifar10", "CIFAR-10, 4,000 labels (the paper's table): Curriculum Labelling, then DMT from its phase 0",
          ("cl-c10-4000", "dmt-c10-4000"), CIFAR_SEEDS, CIFAR_SEEDS, "seed"),
    Table("cifar10-1000", "CIFAR-10, 1,000 labels (the original's ss-*-full-1 setting): CL, then DMT",
          ("cl-c10-1000", "dmt-c10-1000"), CIFAR_SEEDS, CIFAR_SEEDS, "seed"),
)}
ALL = "all"   # every table above, in this order


def experiment_table(experiment: str) -> Table | None:
    return next((t for t in TABLES.values() if experiment in t.experiments), None)


def script_of(experiment: str) -> Path:
    folder = "classification" if "-c10-" in experiment else "segmentation"
    return Path(folder) / f"{experiment}.sh"


def dependency_of(experiment: str) -> str | None:
    """The experiment whose job of the same id must finish first (docs/method.md §1.2, §1.4)."""
    if experiment in ABLATIONS:
        return "abl-baseline"
    if experiment.startswith("dmt-c10-"):
        return os.environ.get("BASELINE_FROM") or experiment.replace("dmt-", "cl-", 1)
    return None


# ----------------------------------------------------------------------------------------- jobs
@dataclass
class Job:
    experiment: str
    id: int
    script: Path
    out: Path
    log: Path
    env: dict[str, str]
    deps: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.experiment}-{self.id}"

    def command(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{env} bash {self.script} {self.id}"


def job_env(experiment: str, job_id: int, runs: Path) -> dict[str, str]:
    """The environment one job runs with: its output folder, where its dependency's outputs are,
    and its data root when VOC_ROOT / CITY_ROOT / CIFAR_ROOT name one (else DATA_ROOT as given)."""
    env = {"OUT": str(runs / f"{experiment}-{job_id}")}
    if experiment in ABLATIONS:
        env["BASELINE_OUT"] = str(runs / f"abl-baseline-{job_id}")
    if experiment.startswith("dmt-c10-"):
        env["CL_OUT"] = str(runs / f"{dependency_of(experiment)}-{job_id}")
    root_var = "CIFAR_ROOT" if "-c10-" in experiment else "CITY_ROOT" if "-city-" in experiment else "VOC_ROOT"
    if os.environ.get(root_var):
        env["DATA_ROOT"] = os.path.abspath(os.environ[root_var])
    return env


def resolve_table(name: str) -> tuple[str, list[tuple[Table, tuple[str, ...]]]]:
    """TABLE (a table, ``all``, or one experiment script's name) → [(table, its experiments)]."""
    if name == ALL:
        return "every table", [(t, t.experiments) for t in TABLES.values()]
    if name in TABLES:
        return TABLES[name].title, [(TABLES[name], TABLES[name].experiments)]
    table = experiment_table(name)
    if table is not None:
        return f"{name} (one row of the table '{table.name}')", [(table, (name,))]
    raise UserError(f"table '{name}': unknown; choose one of {', '.join([*TABLES, ALL])} or an experiment script's "
                    f"name (e.g. dmt-voc-20); ./reproduce.sh --help lists them")


def build_plan(table_name: str, splits: Sequence[int] | None, runs: Path) -> tuple[str, list[Job]]:
    title, parts = resolve_table(table_name)
    jobs: list[Job] = []
    for table, experiments in parts:
        ids = tuple(splits) if splits else table.default_ids
        if table_name == ALL:  # each table takes the ids it has (SBD only 0, CIFAR-10 only seeds 1-5)
            ids = tuple(i for i in ids if i in table.allowed_ids)
        bad = [i for i in ids if i not in table.allowed_ids]
        if bad:
            raise UserError(f"--splits {' '.join(map(str, ids))}: {table.id_word} {bad[0]} does not exist for the table "
                            f"'{table.name}'; use {' '.join(map(str, table.allowed_ids))}")
        for experiment in experiments:
            for i in dict.fromkeys(ids):
                out = runs / f"{experiment}-{i}"
                jobs.append(Job(experiment, i, script_of(experiment), out, runs / "logs" / f"{experiment}-{i}.log",
                                job_env(experiment, i, runs)))
    if not jobs:
        raise UserError(f"--splits {' '.join(map(str, splits or []))}: no table of '{table_name}' has these split ids / "
                        f"seeds; ./reproduce.sh --help lists each table's")
    names = {j.name for j in jobs}
    for job in jobs:
        dep = dependency_of(job.experiment)
        if dep and f"{dep}-{job.id}" in names:
            job.deps.append(f"{dep}-{job.id}")
    return title, jobs


# ------------------------------------------------------------------------------- GPU-hour projection
VOC_N, VOC_VAL, CITY_N, CITY_VAL = 10_582, 1449, 2975, 500                  # docs/method.md §5.1
LABELLED = {"voc": {"106": 100, "50": 211, "20": 530, "8": 1322, "train": 1464},  # §5.2, §5.3
            "city": {"30": 100, "8": 371}}
DMS = {"106": 80, "50": 168, "20": 424, "8": 1057}                          # §5.4 -l / -r subsets
SIZES = {"voc": {"crop": 321 * 321, "test": 505 * 505}, "city": {"crop": 256 * 512, "test": 512 * 1024}}
PAPER_HOURS = ("dmt-voc-20", 8.0)  # §10: one VOC DMT run ≈ 8 h on one RTX 2080 Ti (mixed precision)
_VAR = re.compile(r"^(\w+)=\$\{\1:-([^}]*)\}", re.M)


def script_settings(experiment: str) -> dict[str, str]:
    """The script's variables (``VAR=${VAR:-default}`` lines), each overridden by the environment."""
    text = (REPO / script_of(experiment)).read_text()
    values = {k: os.environ.get(k, v) for k, v in _VAR.findall(text)}
    values["RATIOS"] = os.environ.get("RATIOS") or "0.2 0.4 0.6 0.8 1.0"
    return values


def run_plans(experiment: str) -> tuple[str, list[RunPlan], float]:
    """(setting, RunPlans whose projections add up to the job, extra factor of the online run's steps)."""
    v = script_settings(experiment)
    setting = "city" if "-city-" in experiment else "voc"
    total, val = (CITY_N, CITY_VAL) if setting == "city" else (VOC_N, VOC_VAL)
    train_set = v.get("TRAIN_SET", "")
    labelled = LABELLED[setting].get(train_set, 0)
    unlabelled = total - labelled
    phases = len(v["RATIOS"].split())
    it = lambda epochs, images, batch: int(v[epochs]) * math.ceil(images / int(v[batch]))  # noqa: E731

    def plan(name, base=(0, 1), n_base=0, phase=(0, 1), n_phase=0, labelings=0) -> RunPlan:
        return RunPlan(name, n_base, base[0], base[1], n_phase, phase[0], phase[1], labelings, unlabelled, val)

    base_of = lambda images, n: plan(experiment, (it("BASE_EPOCHS", images, "BASE_BATCH"), int(v["BASE_VAL"])), n)  # noqa: E731
    mutual = lambda models: plan(experiment, phase=(it("PHASE_EPOCHS", unlabelled, "BATCH_PSEUDO"),  # noqa: E731
                                                    int(v["PHASE_VAL"])), n_phase=models * phases,
                                 labelings=models * phases)
    if experiment == "abl-baseline":
        return setting, [base_of(labelled, 1), base_of(DMS[train_set], 2)], 1.0
    if experiment in ("abl-cbst", "abl-dst"):
        return setting, [mutual(1)], 1.0
    if experiment in ("abl-naive", "abl-flip"):
        return setting, [mutual(2)], 1.0
    if experiment == "abl-online":
        steps = plan(experiment, phase=(it("EPOCHS", unlabelled, "BATCH_PSEUDO"), int(v["VAL"])), n_phase=1)
        return setting, [steps], 2.0 if v.get("DOUBLE_STEP", "1") == "1" else 1.0
    baselines = base_of(DMS[train_set], 2) if experiment == "dmt-voc-106" else base_of(labelled, 2)
    plans = [baselines, mutual(2)]
    if experiment == "dmt-voc-sbd":
        oracle = int(v["ORACLE_EPOCHS"]) * math.ceil(VOC_N / int(v["BASE_BATCH"]))
        plans.append(plan(experiment, (oracle, int(v["ORACLE_VAL"])), 1))
    return setting, plans, 1.0


def pixel_rates(setting: str, scale: float) -> tuple[float, float, float, float]:
    """Rates of the paper-scaled projection: ms per step and images/s from pixel work (see module doc)."""
    crop, test = SIZES[setting]["crop"], SIZES[setting]["test"]
    ms_per_step = 8 * crop * 3 * scale * 1000     # 8 images per step (both the supervised and the DMT batch)
    return ms_per_step, ms_per_step, 1 / (2 * test * scale), 1 / (test * scale)


def bench_rates(bench: dict, setting: str, source: str) -> tuple[float, float, float, float]:
    try:
        res = bench["settings"][setting]
        ours = lambda rows: next(r for r in rows if r.get("variant") == "ours")  # noqa: E731
        return (float(ours(res["train"]["supervised"]["rows"])["ms_per_it"]),
                float(ours(res["train"]["dmt"]["rows"])["ms_per_it"]),
                float(ours(res["labelling"]["rows"])["images_per_s"]),
                float(ours(res["evaluation"]["rows"])["images_per_s"]))
    except (KeyError, TypeError, ValueError, StopIteration):
        raise UserError(f"{source}: no '{setting}' rates of the 'ours' variant; write it with "
                        f"python -m bench.segmentation --setting both --json FILE") from None


def seconds_of(experiment: str, rates: tuple[float, float, float, float]) -> float:
    setting_plans = run_plans(experiment)
    _, plans, step_factor = setting_plans
    sup, dmt, lab, ev = rates
    return sum(project(p, sup, dmt * step_factor, lab, ev)["total_s"] for p in plans)


class Projector:
    """GPU-hours per job: measured rates (bench JSON) or the paper-scaled pixel work; None = not projected."""

    def __init__(self, bench_file: str | None):
        self.bench, self.source = None, "projected from the paper's ≈ 8 h per VOC 1/20 DMT run on one RTX 2080 Ti " \
                                        "(docs/method.md §10), scaled by pixel work"
        if bench_file:
            try:
                self.bench = json.loads(Path(bench_file).read_text())
            except (OSError, ValueError) as exc:
                raise UserError(f"--bench {bench_file}: cannot read it as JSON ({exc}); pass the file written by "
                                f"python -m bench.segmentation --json FILE") from None
            scale = self.bench.get("size_scale", 1)
            self.source = (f"projected from the rates measured by bench.segmentation on {self.bench.get('device_name', '?')} "
                           f"({self.bench.get('date', '?')}, {bench_file})"
                           + (f"; size scale {scale}, so not the real sizes" if scale != 1 else ""))
            for setting in ("voc", "city"):
                if setting in self.bench.get("settings", {}):
                    bench_rates(self.bench, setting, bench_file)
        self.bench_file = bench_file
        sup, dmt, lab, ev = pixel_rates("voc", 1.0)
        self.scale = PAPER_HOURS[1] * 3600 / seconds_of(PAPER_HOURS[0], (sup, dmt, lab, ev))

    def hours(self, experiment: str) -> float | None:
        if "-c10-" in experiment:
            return None
        setting = "city" if "-city-" in experiment else "voc"
        if self.bench is not None:
            if setting not in self.bench.get("settings", {}):
                return None
            rates = bench_rates(self.bench, setting, self.bench_file)
        else:
            rates = pixel_rates(setting, self.scale)
        return seconds_of(experiment, rates) / 3600


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
    from utils.report import read_logs, split_run_name  # noqa: F401  (same parser as the report)
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
    p = argparse.ArgumentParser(prog="python -m utils.reproduce", description="The plan of ./reproduce.sh.")
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
