"""Classification speed: the train augmentation (PIL per worker / batched on the CPU / batched on the
device), the WRN-28-2 training step (DMT 496 + 16 with its weights forward, and the 512 baseline
step), the evaluation forward, and the wall time of whole 1,000- and 4,000-label DMT runs projected
from those rates, the original-style pipeline beside ours (docs/method.md §1.2, §2.2, §6.2, §7.2, §7.3, §8).

    python -m bench.classification [--device auto|cpu|cuda] [--steps N] [--warmup N] [--variants fp32,fp16,bf16]
        [--channels-last/--no-channels-last] [--compile] [--batch-pseudo 496] [--batch-labelled 16]
        [--threads 1,2] [--workers 2] [--pil-images N] [--aug-batch 512] [--aug-batches N]
        [--eval-images N] [--json OUT]

* **Augmentation** on random 32×32 images: the PIL path (:func:`classification.augment.train_transform`
  through :class:`utils.trainer.SeededDataset`, as a DataLoader worker runs it) in one thread, and in
  a DataLoader with ``--workers`` processes; the batched path (:mod:`classification.batch_augment`:
  the loader's gather + draws, then :class:`~classification.batch_augment.BatchRandAugment`) on the CPU
  with each ``--threads`` count (torch threads), and on CUDA when there is one. The ratio "batched /
  PIL at the same core count" compares T torch threads with T PIL workers (T = 1 with the
  single-thread PIL rate).
* **Training step**: :func:`classification.training.dmt_step` / ``supervised_step`` in
  :class:`utils.trainer.Trainer` with the EMA, on a synthetic batch, for each precision of
  ``--variants`` with the project's memory format (channels_last on CUDA) and, with ``--compile``,
  compiled (model and weights forward). The *original-style* step is fp16 autocast + GradScaler on
  CUDA (fp32 on CPU), NCHW, eager, from pageable host memory.
* **Projection** (:func:`project_run`): baseline 4,240 iterations of 512; 5 phases × 750 epochs of
  ⌈kept/496⌉ iterations (kept = r·N − 2, all at r = 1; N = 48,800 / 45,800 unlabelled); 5 labelling
  passes over N; validations every 1,000 iterations (+ the project's initial, final and EMA passes) on
  test (baseline) or valtiny (phases); 6 EMA tests. An iteration takes max(step, input) when the
  input is made by loader workers in parallel (PIL), and step + augmentation when the batched
  augmentation runs on the training device. Original-style = its step with PIL at the original's
  workers (3 for the pseudo loader, 4 for the baseline, §7.2); ours = the fastest measured step with
  the batched augmentation, and ours with PIL at ``--project-workers`` (the scripts' WORKERS).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bench.run_projection import validation_passes
from bench.training_steps import CapturingLogger, NEVER, backend_flags, quiet_progress, synchronize
from classification import batch_augment, options, training
from classification.augment import train_transform
from classification.cifar import CifarDataset
from classification.models import wrn_28_2
from classification.training import ModelEMA
from utils.amp import Precision
from utils.cli import Runtime, memory_format_for
from utils.cost import device_name
from utils.distributed import DistInfo
from utils.errors import UserError, run_cli
from utils.io import write_text_atomic
from utils.runtime import resolve_device
from utils.schedules import cosine_scheduler
from utils.trainer import EpochStream, SeededDataset, Trainer, _mix

PRECISIONS = ("fp32", "fp16", "bf16")
SCHEDULE_STEPS = 1_000_000        # the cosine schedule barely moves inside a benchmark
SEED = 0


# ------------------------------------------------------------------------------------ run plans
@dataclass(frozen=True)
class CifarPlan:
    """The counts of one scripted DMT run (docs/method.md §1.2, §2.2, §7.2, §7.3)."""

    name: str
    unlabelled: int
    baseline_iters: int = 4240
    baseline_batch: int = 512
    phase_epochs: int = 750
    ratios: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    batch_pseudo: int = 496
    batch_labelled: int = 16
    val_every: int = 1000
    test_images: int = 10_000
    valtiny_images: int = 200

    def kept(self, ratio: float) -> int:
        """Images kept by the global curriculum (§2.2): all at r ≥ 1, else those strictly above the
        ⌊−rN + 1⌋-indexed sorted confidence: rN − 2 without ties."""
        return self.unlabelled if ratio >= 1 else -int(-ratio * self.unlabelled + 1) - 1

    def phase_iters(self) -> list[int]:
        return [self.phase_epochs * math.ceil(self.kept(r) / self.batch_pseudo) for r in self.ratios]


C10_1000 = CifarPlan("CIFAR-10 1,000 labels (dmt-c10-1000)", unlabelled=50_000 - 200 - 1_000)
C10_4000 = CifarPlan("CIFAR-10 4,000 labels (dmt-c10-4000)", unlabelled=50_000 - 200 - 4_000)


def project_run(plan: CifarPlan, *, baseline_it_s: float, phase_it_s: float, eval_images_per_s: float) -> dict:
    """Seconds per part and in total, from the seconds of one baseline and one phase iteration and the
    evaluation forward rate (labelling and evaluation both run it)."""
    phases = plan.phase_iters()
    evaluations = (validation_passes(plan.baseline_iters, plan.val_every) * plan.test_images
                   + sum((validation_passes(t, plan.val_every) + 2) * plan.valtiny_images for t in phases)
                   + plan.test_images                       # the baseline's EMA on its validation set (test)
                   + (1 + len(phases)) * plan.test_images)  # every phase's EMA tested (the scripts)
    parts = {"baseline_s": plan.baseline_iters * baseline_it_s,
             "phases_s": sum(phases) * phase_it_s,
             "labelling_s": len(plan.ratios) * plan.unlabelled / eval_images_per_s,
             "evaluation_s": evaluations / eval_images_per_s}
    return {**parts, "total_s": sum(parts.values()), "phase_iters": phases, "evaluated_images": evaluations}


# ------------------------------------------------------------------------------------ augmentation
def random_images(count: int, seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def with_threads(threads: int, fn: Callable[[], float]) -> float:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


def pil_single(images: np.ndarray) -> float:
    """Images/s of the PIL train transform in this thread (one DataLoader worker's work)."""
    dataset = SeededDataset(CifarDataset(images, np.zeros(len(images), np.int64), train_transform()))

    def run() -> float:
        dataset[(0, 1)]  # warm-up
        start = time.perf_counter()
        for i in range(len(images)):
            dataset[(i, _mix(SEED, i))]
        return len(images) / (time.perf_counter() - start)
    return with_threads(1, run)


def pil_loader(images: np.ndarray, workers: int, batch: int, batches: int) -> float:
    """Images/s of a ``workers``-process DataLoader running the PIL transform, in the steady state:
    timed from the arrival of the ``workers``-th batch (every worker has started and delivered one)
    over the next ``batches`` batches (each worker prefetches one batch ahead)."""
    dataset = CifarDataset(images, np.zeros(len(images), np.int64), train_transform())
    return loader_rate(EpochStream(dataset, batch, seed=SEED, num_workers=workers, persistent_workers=True,
                                   prefetch_factor=1), workers, batch, batches)


def loader_rate(stream: EpochStream, workers: int, batch: int, batches: int) -> float:
    """Images/s of ``stream`` from the arrival of its ``workers``-th batch over ``batches`` more."""
    it = stream.iterate(0)
    for _ in range(workers):  # start-up
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    del it
    return batches * batch / seconds


class _AugmentingCollate(batch_augment.RawCollate):
    """The whole batched path inside a loader worker: collate, then the transform on the worker's CPU."""

    augmenter: batch_augment.BatchRandAugment | None = None

    def __call__(self, items):
        raw, targets = super().__call__(items)
        if self.augmenter is None:
            self.augmenter = batch_augment.BatchRandAugment("cpu", self.n, self.m_max)
        return self.augmenter(raw), targets


def _raw(images: np.ndarray) -> batch_augment.RawRowsDataset:
    return batch_augment.RawRowsDataset(images.transpose(0, 3, 1, 2), np.zeros(len(images), np.int64))


def batched_loader(images: np.ndarray, workers: int, batch: int, batches: int) -> float:
    """Images/s of the batched path on the CPU in a ``workers``-process DataLoader (1 torch thread
    each, as DataLoader workers run), timed like :func:`pil_loader`."""
    dataset = _raw(images)
    return loader_rate(EpochStream(dataset, batch, seed=SEED, collate_fn=_AugmentingCollate(1, 10, dataset.empty_targets()),
                                   num_workers=workers, persistent_workers=True, prefetch_factor=1),
                       workers, batch, batches)


def batched_rates(images: np.ndarray, device: torch.device, threads: int, batch: int, batches: int) -> dict:
    """The batched path with ``threads`` torch threads: the loader part (batched seeded fetch +
    collate with the draws, what a worker does), the transform on ``device``, and both in series."""
    dataset = _raw(images)
    seeded = SeededDataset(dataset)
    collate = batch_augment.RawCollate(1, 10, dataset.empty_targets())
    augmenter = batch_augment.BatchRandAugment(device)
    keys = [[(i % len(images), _mix(SEED, b, i)) for i in range(batch)] for b in range(batches)]

    def load(k: list) -> batch_augment.RawBatch:
        raw = collate(seeded.__getitems__(k))[0]  # what a DataLoader worker does with a batch of keys
        return raw.pin_memory() if device.type == "cuda" else raw

    def run() -> dict:
        augmenter(load(keys[0]))  # warm-up
        synchronize(device)
        start = time.perf_counter()
        raws = [load(k) for k in keys]
        host = time.perf_counter() - start
        synchronize(device)
        start = time.perf_counter()
        for raw in raws:
            augmenter(raw)
        synchronize(device)
        transform = time.perf_counter() - start
        n = batch * batches
        return {"threads": threads, "device": str(device), "loader_images_per_s": n / host,
                "transform_images_per_s": n / transform, "images_per_s": n / (host + transform),
                "ms_per_batch_of_512": 512 * transform / n * 1000}
    return with_threads(threads, run) if device.type == "cpu" else run()


# ------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class StepVariant:
    name: str
    precision: str
    channels_last: bool
    compile: bool = False
    pageable: bool = False   # original-style: batch in pageable host memory, copied every step

    def describe(self) -> str:
        return f"{self.precision} {'NHWC' if self.channels_last else 'NCHW'}" + (" compiled" if self.compile else "")


def synthetic_batches(pseudo: int, labelled: int, seed: int = SEED) -> tuple[Any, Any]:
    """(DMT batch ((pseudo images, softmax), (labelled images, labels)), baseline batch (images, labels))."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(pseudo + labelled, 3, 32, 32, generator=g)
    probs = torch.softmax(3 * torch.randn(pseudo, 10, generator=g), dim=1)
    labels = torch.randint(0, 10, (pseudo + labelled,), generator=g)
    dmt = ((images[:pseudo].clone(), probs), (images[pseudo:].clone(), labels[pseudo:].clone()))
    return dmt, (images, labels)


def place(batch: Any, device: torch.device, pageable: bool) -> Any:
    """Host pageable (original-style), pinned (ours with the PIL path) or already on the device (ours
    with the batched augmentation, whose output is on the device)."""
    if isinstance(batch, torch.Tensor):
        return batch if pageable or device.type != "cuda" else batch.to(device)
    return type(batch)(place(b, device, pageable) for b in batch)


def measure_step(variant: StepVariant, device: torch.device, dmt: bool, batch: Any, steps: int,
                 warmup: int) -> dict[str, Any]:
    """ms per iteration of the project's step in the Trainer (EMA included)."""
    torch.manual_seed(SEED)
    memory_format = memory_format_for(device, variant.channels_last)
    model = wrn_28_2().to(device=device, memory_format=memory_format)
    rt = Runtime(device, DistInfo(), Precision(variant.precision, device), memory_format)
    argv = ["--compile"] if variant.compile else []
    if dmt:
        args = options.parse_dmt(argv + ["--gamma1", "4", "--gamma2", "4"])
    else:
        args = options.parse_fs(argv + ["--ra", "--alpha", "0.75"])
    run_model = torch.compile(model) if variant.compile else model
    fused = True if device.type == "cuda" and not variant.pageable else None  # as classification.training on CUDA
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, fused=fused)
    scheduler = cosine_scheduler(optimizer, SCHEDULE_STEPS)
    ema = ModelEMA(model, 0.001)
    step_fn = training.dmt_step(run_model, args, rt, SCHEDULE_STEPS) if dmt else training.supervised_step(run_model, args, rt)
    batch = place(batch, device, variant.pageable)
    images = sum(b[0].shape[0] for b in batch) if dmt else batch[0].shape[0]

    def fit(iterations: int) -> None:
        if iterations < 1:
            return
        trainer = Trainer(model=run_model, optimizer=optimizer, scheduler=scheduler, precision=rt.precision,
                          total_steps=iterations, val_every=NEVER, logger=CapturingLogger(), device=device,
                          snapshot_path=None, resume_path=None, log_every=10, ema=ema, desc="bench")
        with quiet_progress():
            trainer.fit(lambda _start: itertools.repeat(batch), step_fn, lambda: {"metric": 0.0})

    with backend_flags(device, fast=not variant.pageable):
        fit(warmup)
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        fit(steps)
        synchronize(device)
        seconds = (time.perf_counter() - start) / steps
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"variant": variant.name, "settings": variant.describe(), "step": "dmt" if dmt else "baseline",
            "batch": images, "ms_per_it": seconds * 1000, "images_per_s": images / seconds, "peak_mem_gib": memory}


def measure_eval(device: torch.device, images: int, batch: int) -> float:
    """Images/s of the WRN-28-2 evaluation forward (fp32, eval mode), as labelling and testing run it."""
    torch.manual_seed(SEED)
    model = wrn_28_2().to(device).eval()
    x = torch.randn(batch, 3, 32, 32, device=device)
    batches = max(1, math.ceil(images / batch))
    with torch.no_grad():
        model(x)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
        synchronize(device)
    return batches * batch / (time.perf_counter() - start)


# ------------------------------------------------------------------------------------ report
def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def augmentation_table(aug: dict[str, Any]) -> list[str]:
    lines = ["| pipeline | cores | images/s | vs PIL, same cores |", "|---|---|---|---|"]
    lines.append(f"| PIL (crop, flip, RandAugment, normalise), 1 thread | 1 | {aug['pil_per_worker']:.0f} | 1.00× |")
    if aug.get("pil_loader") is not None:
        w = aug["workers"]
        lines.append(f"| PIL in a DataLoader, {w} workers | {w} | {aug['pil_loader']:.0f} | 1.00× |")
    for row in aug["batched_cpu"]:
        ratio = row.get("vs_pil")
        lines.append(f"| batched on the CPU (loader part + transform), {row['threads']} thread(s) | {row['threads']} | "
                     f"{row['images_per_s']:.0f} | {_fmt(ratio, '.2f')}{'' if ratio is None else '×'} |")
    if aug.get("batched_loader") is not None:
        w = aug["workers"]
        lines.append(f"| batched on the CPU in a DataLoader, {w} workers × 1 thread | {w} | {aug['batched_loader']:.0f} | "
                     f"{aug['batched_loader_vs_pil']:.2f}× |")
    for row in aug["batched_cpu"]:
        lines.append(f"| - of which the loader part (fetch, collate, draws, sort), {row['threads']} thread(s) | "
                     f"{row['threads']} | {row['loader_images_per_s']:.0f} | |")
    if aug.get("batched_device") is not None:
        row = aug["batched_device"]
        lines.append(f"| batched transform on {row['device']} ({row['ms_per_batch_of_512']:.2f} ms / 512) | GPU | "
                     f"{row['transform_images_per_s']:.0f} | |")
    return lines


def step_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| step | batch | variant | settings | ms/it | images/s | peak mem (GiB) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['batch']} | {r['variant']} | {r['settings']} | {r['ms_per_it']:.1f} | "
                     f"{r['images_per_s']:.0f} | {_fmt(r['peak_mem_gib'], '.2f')} |")
    return lines


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
    p = argparse.ArgumentParser(prog="python -m bench.classification",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (training step, evaluation, device augmentation)")
    p.add_argument("--steps", type=int, default=None, help="timed training iterations per variant (default 20 CUDA / 1 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 5 CUDA / 1 CPU)")
    p.add_argument("--variants", default=None,
                   help="precisions of ours' step, comma-separated from fp32,fp16,bf16 (default: all on CUDA, fp32 on CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="ours' memory format (default: the project's: channels_last on CUDA, NCHW on CPU)")
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
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    args = p.parse_args(argv)
    for flag, value, ok in (("--steps", args.steps, args.steps is None or args.steps >= 1),
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
                            ("--eval-batch", args.eval_batch, args.eval_batch >= 1)):
        if not ok:
            raise UserError(f"{flag} {value}: out of range (counts and batches must be positive; --warmup and "
                            "--workers may be 0)")
    args.thread_counts = _int_list(args.threads, "--threads")
    if args.variants is not None:
        args.variants = [v for v in args.variants.split(",") if v]
        bad = [v for v in args.variants if v not in PRECISIONS]
        if bad or not args.variants:
            raise UserError(f"--variants {','.join(args.variants)}: choose from {','.join(PRECISIONS)}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps if args.steps is not None else (20 if cuda else 1)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    eval_images = args.eval_images if args.eval_images is not None else (10_240 if cuda else 512)
    variants = args.variants or (list(PRECISIONS) if cuda else ["fp32"])
    channels_last = cuda if args.channels_last is None else args.channels_last
    if not cuda and "fp16" in variants:
        variants = [v for v in variants if v != "fp16"] or ["fp32"]  # no fp16 GradScaler step on CPU worth timing

    # --- augmentation
    pool = random_images(max(args.pil_images, args.aug_batch, 512))
    aug: dict[str, Any] = {"workers": args.workers, "batch": args.aug_batch}
    aug["pil_per_worker"] = pil_single(pool[:args.pil_images])
    aug["pil_loader"] = pil_loader(pool, args.workers, args.aug_batch, args.aug_batches) if args.workers else None
    aug["batched_cpu"] = []
    for threads in args.thread_counts:
        row = batched_rates(pool, torch.device("cpu"), threads, args.aug_batch, args.aug_batches)
        pil_same = aug["pil_per_worker"] if threads == 1 else (aug["pil_loader"] if threads == args.workers else None)
        row["vs_pil"] = None if pil_same is None else row["images_per_s"] / pil_same
        aug["batched_cpu"].append(row)
    aug["batched_loader"] = batched_loader(pool, args.workers, args.aug_batch, args.aug_batches) if args.workers else None
    aug["batched_loader_vs_pil"] = (aug["batched_loader"] / aug["pil_loader"]) if args.workers else None
    aug["batched_device"] = batched_rates(pool, device, 1, args.aug_batch, args.aug_batches) if cuda else None

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "device": str(device), "device_name": device_name(device),
                           "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                           "load_average_1min": load, "augmentation": aug}
    lines = [f"Classification speed — {out['date']}, device {device} ({out['device_name']}), torch {torch.__version__}, "
             f"{torch.get_num_threads()} CPU threads of {os.cpu_count()} cores, load average {_fmt(load, '.1f')}", "", "Augmentation (random 32×32 images, RandomRandAugment n=1 m=10):",
             "", *augmentation_table(aug)]

    if not args.skip_training:
        dmt_batch, _ = synthetic_batches(args.batch_pseudo, args.batch_labelled)
        _, base_batch = synthetic_batches(args.baseline_batch - args.baseline_batch // 2, args.baseline_batch // 2)
        original = StepVariant("original-style", "fp16" if cuda else "fp32", False, pageable=True)
        ours = [StepVariant("ours", p, channels_last) for p in variants]
        if args.compile:
            ours += [StepVariant("ours", p, channels_last, compile=True) for p in variants]
        rows = []
        for variant in [original, *ours]:
            dmt_row = measure_step(variant, device, True, dmt_batch, steps, warmup)
            if args.no_baseline_step:
                base_row = {**dmt_row, "step": "baseline (3/4 of dmt)", "batch": args.baseline_batch,
                            "ms_per_it": dmt_row["ms_per_it"] * 0.75 * args.baseline_batch / dmt_row["batch"]}
                base_row["images_per_s"] = base_row["batch"] / base_row["ms_per_it"] * 1000
            else:
                base_row = measure_step(variant, device, False, base_batch, steps, warmup)
            rows += [dmt_row, base_row]
        eval_rate = measure_eval(device, eval_images, args.eval_batch)
        out.update(steps=steps, warmup=warmup, training=rows, eval_images_per_s=eval_rate)

        # --- projection: seconds per iteration of each column, scaled to the real batch sizes
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
        projections = {}
        for plan in (C10_1000, C10_4000):
            phase_b, base_b = plan.batch_pseudo + plan.batch_labelled, plan.baseline_batch
            columns = {
                "original-style": (max(per_it(base_rows[orig], base_b), pil_input(base_b, 4)),
                                   max(per_it(dmt_rows[orig], phase_b), pil_input(plan.batch_pseudo, 3))),
                f"ours + PIL ({args.project_workers} workers)": (
                    max(per_it(base_rows[best], base_b), pil_input(base_b, args.project_workers)),
                    max(per_it(dmt_rows[best], phase_b), pil_input(phase_b, args.project_workers))),
                "ours (batched augmentation)": (per_it(base_rows[best], base_b) + base_b * aug_s,
                                                per_it(dmt_rows[best], phase_b) + phase_b * aug_s),
            }
            projections[plan.name] = {
                "plan": asdict(plan), "ours_step": " ".join(best[1:]),
                "columns": {name: project_run(plan, baseline_it_s=b, phase_it_s=ph, eval_images_per_s=eval_rate)
                            for name, (b, ph) in columns.items()}}
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
    if args.json:
        write_text_atomic(args.json, json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main))
