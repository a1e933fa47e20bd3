"""Segmentation speed measurements (docs/method.md §2.1, §7.1, §7.3, §8): the training step of each column
(:mod:`bench.training_steps`), a CBC labelling pass and the whole-image evaluation, on the VOC and
Cityscapes settings (:func:`make_setting`) with random weights.

Labelling (forward passes, the per-class thresholds and the ``.npy`` writes,
:func:`segmentation.label_pass.label_pass`) and evaluation (:func:`segmentation.evaluation.evaluate`)
run the project's code in both columns, eager, with each column's precision and memory format; the
reference labels in two forward passes per image (the original's), ours in one (the cache) and, for
the one-pass speed-up in the same run, also in two.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from bench.common import peak_memory_gib, release, reset_peak
from bench.run_projection import CITY_8, VOC_20, RunPlan
from bench.training_steps import (ProjectLoop, ReferenceLoop, StepConfig, backend_flags, count_flops, pin,
                                  project_runtime, synchronize, synthetic_batch)
from segmentation.run_config import CITY_NUM_CLASSES, VOC_NUM_CLASSES
from segmentation.evaluation import evaluate
from segmentation.label_pass import label_pass
from segmentation.run_config import CITY_CROP_SIZE, CITY_SIZE, VOC_CROP_SIZE, VOC_TEST_SIZE
from utils.amp import Precision

LABEL_RATIO = 0.2   # the first phase's CBC ratio (docs/method.md §1.1); the speed does not depend on it
LABEL_BATCH = 8     # docs/method.md §7.3: labelling calls use batch 8
EVAL_BATCH = 8      # docs/method.md §8: labelled + pseudo batch size


@dataclass(frozen=True)
class Setting:
    name: str
    num_classes: int
    test_size: tuple[int, int]      # labelling / evaluation size (VOC padded to, City resized to)
    original_size: tuple[int, int]  # a typical image; the labeller keeps its top-left crop (docs/method.md §2.1)
    supervised: StepConfig
    dmt: StepConfig
    plan: RunPlan


def scaled(size: Sequence[int], factor: float) -> tuple[int, int]:
    return tuple(max(16, round(n * factor)) for n in size)  # type: ignore[return-value]


def make_setting(name: str, factor: float) -> Setting:
    """VOC / Cityscapes sizes, batches, γ and logging intervals (⌊steps per epoch / 10⌋, docs/method.md §9.1)."""
    if name == "voc":
        crop, classes = scaled(VOC_CROP_SIZE, factor), VOC_NUM_CLASSES
        return Setting("voc", classes, scaled(VOC_TEST_SIZE, factor), scaled((375, 500), factor),
                       StepConfig(classes, crop, labelled=8, log_every=67 // 10),
                       StepConfig(classes, crop, labelled=1, pseudo=7, gamma=(5.0, 5.0), log_every=1436 // 10),
                       VOC_20)
    crop, classes = scaled(CITY_CROP_SIZE, factor), CITY_NUM_CLASSES
    return Setting("city", classes, scaled(CITY_SIZE, factor), scaled((1024, 2048), factor),
                   StepConfig(classes, crop, labelled=8, log_every=47 // 10),
                   StepConfig(classes, crop, labelled=2, pseudo=6, gamma=(3.0, 3.0), log_every=434 // 10),
                   CITY_8)


@dataclass(frozen=True)
class Variant:
    """How one column runs: precision, memory format, cuDNN/TF32 switches, compile."""

    name: str
    precision: Precision
    memory_format: torch.memory_format
    fast_backends: bool
    compile: bool = False

    def describe(self) -> str:
        layout = "NHWC" if self.memory_format == torch.channels_last else "NCHW"
        return f"{self.precision.mode} {layout}" + (" compiled" if self.compile else "")


# ------------------------------------------------------------------------------------ training
def measure_training(base: nn.Module, cfg: StepConfig, variant: Variant, device: torch.device, iters: int,
                     warmup: int, peak: float | None) -> dict[str, Any]:
    model = copy.deepcopy(base).to(device=device, memory_format=variant.memory_format)
    batch = synthetic_batch(cfg)
    with backend_flags(device, variant.fast_backends):
        if variant.name == "reference":
            loop = ReferenceLoop(model, cfg, device, variant.precision)
            flops = count_flops(lambda: loop.run(batch, 1))
        else:
            batch = pin(batch) if device.type == "cuda" else batch
            rt = project_runtime(device, variant.precision, variant.memory_format)
            eager = ProjectLoop(model, cfg, rt)
            flops = count_flops(lambda: eager.run(batch, 1))
            loop = ProjectLoop(torch.compile(model), cfg, rt, params_of=model) if variant.compile else eager
        loop.run(batch, warmup)
        synchronize(device)
        reset_peak(device)
        start = time.perf_counter()
        loop.run(batch, iters)
        synchronize(device)
        seconds = (time.perf_counter() - start) / iters
    memory = peak_memory_gib(device)
    del loop, model
    release(device)
    return {"variant": variant.name, "settings": variant.describe(), "batch": cfg.batch,
            "ms_per_it": seconds * 1000, "images_per_s": cfg.batch / seconds, "peak_mem_gib": memory,
            "tflop_per_it": flops / 1e12, "mfu": (flops / seconds / (peak * 1e12)) if peak else None}


# ------------------------------------------------------------------------------------ labelling / eval
def _warm_forward(model: nn.Module, images: torch.Tensor, variant: Variant, device: torch.device) -> None:
    with torch.no_grad(), variant.precision.autocast():
        model(images.to(device).contiguous(memory_format=variant.memory_format))
    synchronize(device)


def measure_labelling(model: nn.Module, setting: Setting, variant: Variant, device: torch.device,
                      images: int, folder: Path, one_pass: bool = True) -> dict[str, Any]:
    """A CBC labelling pass (docs/method.md §2.1) over ``images`` test-size images: forward(s),
    thresholds and ``.npy`` files (:func:`segmentation.label_pass.label_pass`); ``one_pass``: the
    project's (label, confidence) cache in memory, else the original's two forward passes."""
    host = torch.randn(LABEL_BATCH, 3, *setting.test_size)
    host = host.pin_memory() if device.type == "cuda" and variant.name == "ours" else host
    batches = math.ceil(images / LABEL_BATCH)
    sizes = [setting.original_size] * LABEL_BATCH
    passes = 1 if one_pass else 2

    def loader():
        for b in range(batches):
            yield host, None, [f"{variant.name}{passes}_{b}_{i}" for i in range(LABEL_BATCH)], sizes

    class Loader:  # iterable twice, as a DataLoader
        def __iter__(self):
            return loader()

    _warm_forward(model, host, variant, device)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = label_pass(model, Loader(), device, variant.precision, variant.memory_format, setting.num_classes,
                        LABEL_RATIO, 16, folder, cache_bytes=2**40 if one_pass else 0)
    assert result.passes == passes
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"variant": variant.name, "settings": variant.describe(), "passes": passes,
            "images": batches * LABEL_BATCH, "images_per_s": batches * LABEL_BATCH / seconds}


def measure_evaluation(model: nn.Module, setting: Setting, variant: Variant, device: torch.device,
                       images: int) -> dict[str, Any]:
    """:func:`segmentation.evaluation.evaluate` (whole image, docs/method.md §8) over ``images`` test-size images."""
    g = torch.Generator().manual_seed(1)
    host = torch.randn(EVAL_BATCH, 3, *setting.test_size, generator=g)
    labels = torch.randint(0, setting.num_classes, (EVAL_BATCH, *setting.test_size), generator=g)
    if device.type == "cuda" and variant.name == "ours":
        host, labels = host.pin_memory(), labels.pin_memory()
    batches = math.ceil(images / EVAL_BATCH)
    _warm_forward(model, host, variant, device)
    start = time.perf_counter()
    evaluate(model, [(host, labels)] * batches, setting.num_classes, device, variant.precision,
             memory_format=variant.memory_format)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"variant": variant.name, "settings": variant.describe(), "images": batches * EVAL_BATCH,
            "images_per_s": batches * EVAL_BATCH / seconds}


def measure_inference(base: nn.Module, setting: Setting, variant: Variant, device: torch.device,
                      label_images: int, eval_images: int, workdir: Path) -> tuple[dict, dict]:
    model = copy.deepcopy(base).to(device=device, memory_format=variant.memory_format).eval()
    with backend_flags(device, variant.fast_backends):
        # the reference labels in two forward passes, as the original; ours in one, and (for the
        # one-pass speed-up in the same run) in two: alternated twice, the faster of each kept, so
        # that a load change on a shared machine does not fall on one of them only
        if variant.name == "reference":
            labelling = [measure_labelling(model, setting, variant, device, label_images,
                                           workdir / f"{setting.name}-{variant.name}-2", one_pass=False)]
        else:
            runs = [measure_labelling(model, setting, variant, device, label_images,
                                      workdir / f"{setting.name}-{variant.name}-{passes}-{r}", one_pass=passes == 1)
                    for r in range(2) for passes in (1, 2)]
            labelling = [max((x for x in runs if x["passes"] == p), key=lambda x: x["images_per_s"]) for p in (1, 2)]
        evaluation = measure_evaluation(model, setting, variant, device, eval_images)
    del model
    release(device)
    return labelling, evaluation
