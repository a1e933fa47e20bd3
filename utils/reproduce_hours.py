"""GPU-hours of the jobs of a ``./reproduce.sh`` plan (:mod:`utils.reproduce_plan`; docs/method.md §5, §10).

With ``--bench FILE`` (the JSON of ``python -m bench.segmentation --json FILE``), each
segmentation job is projected from the measured rates of the project's own step ("ours") with
:func:`bench.run_projection.project` and the job's counts (epochs, batches, val intervals and ratios
read from the script, environment overrides honoured; set sizes of docs/method.md §5). Without it, the
projection scales the paper's one figure — ≈ 8 h for a VOC 1/20 DMT run on one RTX 2080 Ti
(docs/method.md §10) — by the pixel work of each job (training images × crop pixels × 3 for
forward + backward; labelling 2 and evaluation 1 forward per image at the test size). CIFAR-10 jobs
have no measured rate (the benchmark covers segmentation only) and are not projected.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from bench.run_projection import RunPlan, project
from utils.errors import UserError
from utils.reproduce_plan import REPO, script_of

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
