"""The plan of a paper table for ``./reproduce.sh``: which experiment scripts it needs, with which split
ids / seeds, in which order and after which others (docs/method.md §1.4, §7.3, §10).

A job is one experiment script with one split id (segmentation) or seed (CIFAR-10): its outputs go
to ``RUNS/<experiment>-<id>`` (the scripts' own default under ``runs/``), its stdout/stderr to
``RUNS/logs/<experiment>-<id>.log``. Dependencies: every ablation needs ``abl-baseline`` of the
same split id (it copies its snapshots), a CIFAR DMT run needs the CL run of the same seed (it
reuses its phase-0 model, docs/method.md §1.2). The shell runs the jobs in plan order, each as soon
as a slot is free and its dependencies have finished.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]

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
