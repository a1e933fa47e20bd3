"""Classification training-step speed (docs/method.md §3.3, §7.2): :func:`classification.training.dmt_step`
(DMT 496 + 16 with its weights forward) and ``supervised_step`` (the 512 baseline) in
:class:`utils.trainer.Trainer` with the EMA, on a synthetic batch, and the WRN-28-2 evaluation forward.

Ours runs with each precision asked for, the project's memory format (channels_last on CUDA) and,
with ``--compile``, compiled (model and weights forward). The *original-style* step is fp16 autocast
+ GradScaler on CUDA (fp32 on CPU), NCHW, eager, from pageable host memory.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from bench.common import SEED, fmt, peak_memory_gib, reset_peak
from bench.training_steps import CapturingLogger, NEVER, backend_flags, quiet_progress, synchronize
from classification import options, training
from classification.models import wrn_28_2
from classification.training import ModelEMA
from utils.amp import Precision
from utils.cli import Runtime, memory_format_for
from utils.distributed import DistInfo
from utils.schedules import cosine_scheduler
from utils.trainer import Trainer

SCHEDULE_STEPS = 1_000_000        # the cosine schedule barely moves inside a benchmark


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
        reset_peak(device)
        start = time.perf_counter()
        fit(steps)
        synchronize(device)
        seconds = (time.perf_counter() - start) / steps
    memory = peak_memory_gib(device)
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


def measure_steps(device: torch.device, precisions: Sequence[str], channels_last: bool, compile: bool,
                  batches: tuple[int, int, int], baseline_step: bool, steps: int,
                  warmup: int) -> tuple[list[dict[str, Any]], StepVariant]:
    """Rows of the DMT and the baseline step (batches: pseudo, labelled, baseline) for the original-style
    variant, then ours at each precision (and compiled); without ``baseline_step`` the baseline row
    is the DMT step's scaled by 3/4 (no weights forward) and by the batch. Also returns the
    original-style variant."""
    cuda = device.type == "cuda"
    batch_pseudo, batch_labelled, baseline_batch = batches
    dmt_batch, _ = synthetic_batches(batch_pseudo, batch_labelled)
    _, base_batch = synthetic_batches(baseline_batch - baseline_batch // 2, baseline_batch // 2)
    original = StepVariant("original-style", "fp16" if cuda else "fp32", False, pageable=True)
    ours = [StepVariant("ours", p, channels_last) for p in precisions]
    if compile:
        ours += [StepVariant("ours", p, channels_last, compile=True) for p in precisions]
    rows = []
    for variant in [original, *ours]:
        dmt_row = measure_step(variant, device, True, dmt_batch, steps, warmup)
        if not baseline_step:
            base_row = {**dmt_row, "step": "baseline (3/4 of dmt)", "batch": baseline_batch,
                        "ms_per_it": dmt_row["ms_per_it"] * 0.75 * baseline_batch / dmt_row["batch"]}
            base_row["images_per_s"] = base_row["batch"] / base_row["ms_per_it"] * 1000
        else:
            base_row = measure_step(variant, device, False, base_batch, steps, warmup)
        rows += [dmt_row, base_row]
    return rows, original


def step_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| step | batch | variant | settings | ms/it | images/s | peak mem (GiB) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['batch']} | {r['variant']} | {r['settings']} | {r['ms_per_it']:.1f} | "
                     f"{r['images_per_s']:.0f} | {fmt(r['peak_mem_gib'], '.2f')} |")
    return lines
