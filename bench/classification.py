"""Classification speed: the train augmentation (PIL per worker / batched on the CPU / batched on the
device), the WRN-28-2 training step (DMT 496 + 16 with its weights forward, and the 512 baseline
step), the evaluation forward, and the wall time of whole 1,000- and 4,000-label DMT runs projected
from those rates, the original-style pipeline beside ours (docs/method.md §1.2, §2.2, §6.2, §7.2, §7.3, §8).

    python -m bench.classification [--device auto|cpu|cuda] [--steps N] [--warmup N] [--variants fp32,fp16,bf16]
        [--channels-last/--no-channels-last] [--compile] [--batch-pseudo 496] [--batch-labelled 16]
        [--threads 1,2] [--workers 2] [--pil-images N] [--aug-batch 512] [--aug-batches N]
        [--eval-images N] [--json OUT]

* **Augmentation** (:mod:`bench.classification_augment`) on random 32×32 images: the PIL path per
  worker and in a DataLoader with ``--workers`` processes, the batched path on the CPU with each
  ``--threads`` count, in DataLoader workers, and on CUDA when there is one.
* **Training step** (:mod:`bench.classification_steps`): the DMT and baseline steps in the Trainer
  with the EMA for each precision of ``--variants`` (and compiled with ``--compile``), beside the
  original-style step; the evaluation forward.
* **Projection** (:func:`bench.run_projection.project_run` with the counts of
  :class:`~bench.run_projection.CifarPlan`). An iteration takes max(step, input) when the
  input is made by loader workers in parallel (PIL), and step + augmentation when the batched
  augmentation runs on the training device. Original-style = its step with PIL at the original's
  workers (3 for the pseudo loader, 4 for the baseline, §7.2); ours = the fastest measured step with
  the batched augmentation, and ours with PIL at ``--project-workers`` (the scripts' WORKERS).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from typing import Any, Sequence

import torch

from bench.classification_augment import augmentation_table, measure_augmentation
from bench.classification_steps import StepVariant, measure_eval, measure_steps, step_table
from bench.common import add_channels_last, add_json, check_ranges, fmt, parser, resolve, run_fields, write_json
from bench.run_projection import C10_1000, C10_4000, CifarPlan, project_run
from utils.errors import UserError, run_cli

PRECISIONS = ("fp32", "fp16", "bf16")
# flag: (default on CUDA, default on CPU)
DEVICE_DEFAULTS = {"steps": (20, 1), "warmup": (5, 1), "eval_images": (10_240, 512), "channels_last": (True, False)}


# ------------------------------------------------------------------------------------ projection
def project_plan(plan: CifarPlan, rows: list[dict[str, Any]], aug: dict[str, Any], eval_rate: float,
                 original: StepVariant, project_workers: int) -> tuple[dict[str, Any], tuple, dict[str, Any]]:
    """The projection of ``plan`` in three columns (module doc), from the measured step rows (scaled to
    the plan's batch sizes), the augmentation rates and the evaluation rate; also the fastest of ours'
    steps and the batched augmentation row it is projected with."""
    def per_it(row: dict, real_batch: int) -> float:
        return row["ms_per_it"] / 1000 * real_batch / row["batch"]

    def pil_input(real_batch: int, workers: int) -> float:
        return real_batch / (workers * aug["pil_per_worker"])

    device_aug = aug["batched_device"] or max(aug["batched_cpu"], key=lambda r: r["transform_images_per_s"])
    aug_s = 1 / device_aug["transform_images_per_s"]
    dmt_rows = {(r["variant"], r["settings"]): r for r in rows if r["step"] == "dmt"}
    base_rows = {(r["variant"], r["settings"]): r for r in rows if r["step"] != "dmt"}
    best = min((k for k in dmt_rows if k[0] == "ours"), key=lambda k: dmt_rows[k]["ms_per_it"])
    orig = ("original-style", original.describe())
    phase_b, base_b = plan.batch_pseudo + plan.batch_labelled, plan.baseline_batch
    columns = {
        "original-style": (max(per_it(base_rows[orig], base_b), pil_input(base_b, 4)),
                           max(per_it(dmt_rows[orig], phase_b), pil_input(plan.batch_pseudo, 3))),
        f"ours + PIL ({project_workers} workers)": (
            max(per_it(base_rows[best], base_b), pil_input(base_b, project_workers)),
            max(per_it(dmt_rows[best], phase_b), pil_input(phase_b, project_workers))),
        "ours (batched augmentation)": (per_it(base_rows[best], base_b) + base_b * aug_s,
                                        per_it(dmt_rows[best], phase_b) + phase_b * aug_s),
    }
    projection = {"plan": asdict(plan), "ours_step": " ".join(best[1:]),
                  "columns": {name: project_run(plan, baseline_it_s=b, phase_it_s=ph, eval_images_per_s=eval_rate)
                              for name, (b, ph) in columns.items()}}
    return projection, best, device_aug


def projection_table(projections: dict[str, Any]) -> list[str]:
    columns = list(next(iter(projections.values()))["columns"])
    lines = ["| run | part | " + " | ".join(f"{c} (h)" for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for plan_name, proj in projections.items():
        for i, part in enumerate(("baseline_s", "phases_s", "labelling_s", "evaluation_s", "total_s")):
            cells = " | ".join(f"{proj['columns'][c][part] / 3600:.2f}" for c in columns)
            lines.append(f"| {plan_name if i == 0 else ''} | {part[:-2]} | {cells} |")
    return lines


# ------------------------------------------------------------------------------------ main
def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise UserError(f"{flag} {text}: expected comma-separated integers, e.g. 1,2") from None
    if not values or min(values) < 1:
        raise UserError(f"{flag} {text}: expected positive integers, e.g. 1,2")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser("python -m bench.classification", __doc__)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (training step, evaluation, device augmentation)")
    p.add_argument("--steps", type=int, default=None, help="timed training iterations per variant (default 20 CUDA / 1 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 5 CUDA / 1 CPU)")
    p.add_argument("--variants", default=None,
                   help="precisions of ours' step, comma-separated from fp32,fp16,bf16 (default: all on CUDA, fp32 on CPU)")
    add_channels_last(p)
    p.add_argument("--compile", action="store_true", help="also time ours compiled (model and weights forward)")
    p.add_argument("--batch-pseudo", type=int, default=496, help="DMT pseudo batch (default 496, §7.2)")
    p.add_argument("--batch-labelled", type=int, default=16, help="DMT labelled batch (default 16, §7.2)")
    p.add_argument("--baseline-batch", type=int, default=512, help="baseline batch (default 512, §7.2)")
    p.add_argument("--no-baseline-step", action="store_true",
                   help="do not time the baseline step; project it from the DMT step scaled by 3/4 (no weights forward)")
    p.add_argument("--threads", default="1,2", help="torch thread counts for the batched path on the CPU (default 1,2)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the PIL loader rate (0: skip)")
    p.add_argument("--project-workers", type=int, default=8,
                   help="workers of 'ours + PIL' in the projection (the scripts' WORKERS, default 8)")
    p.add_argument("--pil-images", type=int, default=1024, help="images for the single-thread PIL rate")
    p.add_argument("--aug-batch", type=int, default=512, help="batch of the batched augmentation and the PIL loader")
    p.add_argument("--aug-batches", type=int, default=4, help="batches timed for the batched path and PIL loader")
    p.add_argument("--eval-images", type=int, default=None, help="images for the evaluation rate (default 10,240 CUDA / 512 CPU)")
    p.add_argument("--eval-batch", type=int, default=512, help="evaluation batch (default 512, --eval-batch-size)")
    p.add_argument("--skip-training", action="store_true", help="augmentation only (no step, evaluation or projection)")
    add_json(p)
    args = p.parse_args(argv)
    check_ranges((("--steps", args.steps, args.steps is None or args.steps >= 1),
                  ("--warmup", args.warmup, args.warmup is None or args.warmup >= 0),
                  ("--batch-pseudo", args.batch_pseudo, args.batch_pseudo >= 1),
                  ("--batch-labelled", args.batch_labelled, args.batch_labelled >= 1),
                  ("--baseline-batch", args.baseline_batch, args.baseline_batch >= 2),
                  ("--workers", args.workers, args.workers >= 0),
                  ("--project-workers", args.project_workers, args.project_workers >= 1),
                  ("--pil-images", args.pil_images, args.pil_images >= 1),
                  ("--aug-batch", args.aug_batch, args.aug_batch >= 1),
                  ("--aug-batches", args.aug_batches, args.aug_batches >= 1),
                  ("--eval-images", args.eval_images, args.eval_images is None or args.eval_images >= 1),
                  ("--eval-batch", args.eval_batch, args.eval_batch >= 1)),
                 " (counts and batches must be positive; --warmup and --workers may be 0)")
    args.thread_counts = _int_list(args.threads, "--threads")
    if args.variants is not None:
        args.variants = [v for v in args.variants.split(",") if v]
        bad = [v for v in args.variants if v not in PRECISIONS]
        if bad or not args.variants:
            raise UserError(f"--variants {','.join(args.variants)}: choose from {','.join(PRECISIONS)}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve(args, DEVICE_DEFAULTS)
    cuda = device.type == "cuda"
    steps, warmup, channels_last = args.steps, args.warmup, args.channels_last
    variants = args.variants or (list(PRECISIONS) if cuda else ["fp32"])
    if not cuda and "fp16" in variants:
        variants = [v for v in variants if v != "fp16"] or ["fp32"]  # no fp16 GradScaler step on CPU worth timing

    aug = measure_augmentation(device, args.pil_images, args.workers, args.thread_counts, args.aug_batch,
                               args.aug_batches)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out: dict[str, Any] = {**run_fields(device), "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                           "load_average_1min": load, "augmentation": aug}
    lines = [f"Classification speed — {out['date']}, device {device} ({out['device_name']}), torch {torch.__version__}, "
             f"{torch.get_num_threads()} CPU threads of {os.cpu_count()} cores, load average {fmt(load, '.1f')}", "",
             "Augmentation (random 32×32 images, RandomRandAugment n=1 m=10):", "", *augmentation_table(aug)]

    if not args.skip_training:
        rows, original = measure_steps(device, variants, channels_last, args.compile,
                                       (args.batch_pseudo, args.batch_labelled, args.baseline_batch),
                                       not args.no_baseline_step, steps, warmup)
        eval_rate = measure_eval(device, args.eval_images, args.eval_batch)
        out.update(steps=steps, warmup=warmup, training=rows, eval_images_per_s=eval_rate)
        projections = {}
        for plan in (C10_1000, C10_4000):
            projections[plan.name], best, device_aug = project_plan(plan, rows, aug, eval_rate, original,
                                                                    args.project_workers)
        out["projection"] = projections
        scaled = (args.batch_pseudo, args.batch_labelled, args.baseline_batch) != (496, 16, 512)
        lines += ["", f"Training step (WRN-28-2, {steps} timed iterations after {warmup}; DMT includes the weights "
                      "forward; original-style = " + original.describe() + ", pageable batch):", "", *step_table(rows),
                  "", f"Evaluation forward (fp32, batch {args.eval_batch}): {eval_rate:.0f} images/s", "",
                  "Projected wall time of whole runs (ours' step: " + " ".join(best[1:]) + "; batched augmentation "
                  + f"at {device_aug['transform_images_per_s']:.0f} images/s on {device_aug['device']}"
                  + ("; step batches scaled linearly to 496 + 16 / 512" if scaled else "") + "):", "",
                  *projection_table(projections)]
    print("\n".join(lines), flush=True)
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main))
