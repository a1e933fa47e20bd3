"""Benchmark: the original 2020 training step ("reference") against the project's own ("ours"), side by
side, plus labelling, evaluation and input-pipeline throughput, and the wall time of whole VOC 1/20
and Cityscapes 1/8 DMT runs projected from the measured rates (docs/method.md §4.1, §6.1, §7.1, §7.3, §8, §10).

    python -m bench.segmentation [--device auto|cpu|cuda] [--backbone resnet101|resnet50|mobilenet_v3_large]
        [--setting voc|city|both] [--size-scale F] [--iters N] [--warmup N] [--compile] [--json OUT]
        [--amp-dtype auto|bf16|fp16|fp32] [--no-channels-last] [--peak-tflops T]
        [--label-images N] [--eval-images N] [--pipeline-images N] [--pipeline-root DIR]

Settings (docs/method.md §7.3): VOC — supervised batch 8 and DMT batch 7 pseudo + 1 labelled at 321×321,
21 classes, γ 5/5; Cityscapes — supervised 8 and DMT 6 pseudo + 2 labelled at 256×512, 19
classes, γ 3/3. ``--size-scale`` shrinks every crop and test size (for CPU runs); projected times
are then not those of the real sizes. Weights are random (the speed does not depend on them).

What the two columns run is described in :mod:`bench.training_steps`. Labelling (forward passes,
the per-class thresholds and the ``.npy`` writes, :func:`segmentation.labeling.label_pass`) and
evaluation (:func:`segmentation.evaluation.evaluate`, whole-image protocol) run the project's code
in both columns, eager, with each column's precision and memory format; the reference labels in
two forward passes per image (the original's), ours in one (the cache) and, for the one-pass
speed-up in the same run, also in two. MFU = model FLOPs of one step
(:class:`torch.utils.flop_counter.FlopCounterMode`: convolutions and matmuls, forward + backward)
per second over the device's dense bf16 peak (a table of known GPUs, or ``--peak-tflops``).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from bench import input_pipeline
from bench.run_projection import CITY_8, VOC_20, RunPlan, project
from bench.training_steps import (ProjectLoop, ReferenceLoop, StepConfig, backend_flags, count_flops, pin,
                                  project_runtime, reference_precision, synchronize, synthetic_batch)
from segmentation.datasets import CITY_NUM_CLASSES, VOC_NUM_CLASSES
from segmentation.evaluation import evaluate
from segmentation.labeling import label_pass
from segmentation.models import BACKBONES, deeplab_v2
from segmentation.transforms import CITY_CROP_SIZE, CITY_SIZE, VOC_CROP_SIZE, VOC_TEST_SIZE
from utils.amp import Precision, choose_mode
from utils.cli import memory_format_for
from utils.cost import device_name
from utils.errors import UserError, run_cli
from utils.io import write_text_atomic
from utils.runtime import resolve_device

# Dense bf16 tensor-core peaks (TFLOPS), matched in order against torch.cuda.get_device_name().
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0),
    ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0),
)
LABEL_RATIO = 0.2   # the first phase's CBC ratio (docs/method.md §1.1); the speed does not depend on it
LABEL_BATCH = 8     # docs/method.md §7.3: labelling calls use batch 8
EVAL_BATCH = 8      # docs/method.md §8: labelled + pseudo batch size
DEFAULT_PIPELINE_ROOT = "/tmp/dmt_bench_voc"


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


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak for CPU (pass --peak-tflops)"
    name = device_name(device)
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value, f"table ({key}, dense bf16)"
    return None, f"unknown GPU {name!r} (pass --peak-tflops)"


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


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
    thresholds and ``.npy`` files (:func:`segmentation.labeling.label_pass`); ``one_pass``: the
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


# ------------------------------------------------------------------------------------ report
def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _size(size: Sequence[int]) -> str:
    return f"{size[0]}×{size[1]}"


def training_table(results: dict[str, Any]) -> list[str]:
    lines = ["| setting | step | batch | crop | variant | settings | ms/it | images/s | peak mem (GiB) "
             "| TFLOP/it | MFU |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for step in ("supervised", "dmt"):
            for row in res["train"][step]["rows"]:
                mfu = None if row["mfu"] is None else 100 * row["mfu"]
                lines.append(f"| {name} | {step} | {res['train'][step]['batch_layout']} | {_size(res['crop'])} | "
                             f"{row['variant']} | {row['settings']} | {row['ms_per_it']:.1f} | "
                             f"{row['images_per_s']:.2f} | {_num(row['peak_mem_gib'], '.2f')} | "
                             f"{row['tflop_per_it']:.4g} | {_num(mfu, '.1f')}{'' if mfu is None else '%'} |")
    return lines


def throughput_table(results: dict[str, Any], pipeline: dict[str, Any] | None) -> list[str]:
    lines = ["| setting | pass | size | batch | variant | settings | images/s |", "|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for key in ("labelling", "evaluation"):
            for row in res[key]["rows"]:
                label = (f"labelling ({row['passes']} pass{'es' if row['passes'] > 1 else ''} + CBC + .npy)"
                         if key == "labelling" else "evaluation")
                lines.append(f"| {name} | {label} | {_size(res['test_size'])} | {LABEL_BATCH if key == 'labelling' else EVAL_BATCH} "
                             f"| {row['variant']} | {row['settings']} | {row['images_per_s']:.2f} |")
    if pipeline is not None:
        crop = _size(pipeline["crop"])
        lines.append(f"| voc | input pipeline (decode+augment, per worker) | {crop} | 1 | labelled | JPEG+PNG | "
                     f"{pipeline['labelled_per_worker']:.1f} |")
        lines.append(f"| voc | input pipeline (decode+augment, per worker) | {crop} | 1 | pseudo | JPEG+.npy | "
                     f"{pipeline['pseudo_per_worker']:.1f} |")
        lines.append(f"| voc | input pipeline (decode only, per worker) | 375×500 | 1 | labelled | JPEG+PNG | "
                     f"{pipeline['labelled_decode_per_worker']:.1f} |")
        lines.append(f"| voc | input pipeline (decode only, per worker) | 375×500 | 1 | pseudo | JPEG+.npy | "
                     f"{pipeline['pseudo_decode_per_worker']:.1f} |")
    return lines


def projection_table(results: dict[str, Any]) -> list[str]:
    lines = ["| run | part | count | reference (h) | ours (h) |", "|---|---|---|---|---|"]
    for res in results.values():
        plan, proj = res["plan"], res["projection"]
        ref, ours = proj["reference"], proj["ours"]
        counts = {"baselines_s": f"{plan['baselines']} × {plan['baseline_iters']:,} it",
                  "phases_s": f"{plan['phases']} × {plan['phase_iters']:,} it",
                  "labelling_s": f"{plan['labelings']} × {plan['unlabelled_images']:,} images",
                  "evaluation_s": f"{ref['evaluations']} × {plan['val_images']:,} images",
                  "total_s": f"ours/reference {proj['speedup']:.2f}×"}
        for key, count in counts.items():
            lines.append(f"| {plan['name'] if key == 'baselines_s' else ''} | {key[:-2]} | {count} | "
                         f"{ref[key] / 3600:.2f} | {ours[key] / 3600:.2f} |")
    return lines


def workers_lines(results: dict[str, Any], pipeline: dict[str, Any] | None) -> list[str]:
    """Workers each loader needs to keep up with ours' measured step rate (VOC input rates)."""
    if pipeline is None or "voc" not in results:
        return []
    res = results["voc"]
    out = []
    for step, (pseudo, labelled) in (("dmt", (7, 1)), ("supervised", (0, 8))):
        ours = next(r for r in res["train"][step]["rows"] if r["variant"] == "ours")
        steps_per_s = 1000 / ours["ms_per_it"]
        need = [f"labelled loader ≥ {input_pipeline.workers_needed(labelled * steps_per_s, pipeline['labelled_per_worker'])}"]
        if pseudo:
            need.insert(0, f"pseudo loader ≥ "
                           f"{input_pipeline.workers_needed(pseudo * steps_per_s, pipeline['pseudo_per_worker'])}")
        out.append(f"- voc {step} at {ours['images_per_s']:.1f} images/s: {', '.join(need)} workers "
                   "(the project's default is --workers 4 per loader)")
    return out


# ------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.segmentation",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet101")
    p.add_argument("--setting", choices=["voc", "city", "both"], default="both")
    p.add_argument("--size-scale", type=float, default=1.0, help="multiply every crop/test size (CPU: e.g. 0.1)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per step (default: 20 on CUDA, 2 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default: 5 on CUDA, 1 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile ours (warm-up absorbs the compile time)")
    p.add_argument("--amp-dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="ours' precision (auto: the project's --mixed-precision default, bf16 where supported)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="ours' memory format (default: the project's: channels_last on CUDA, NCHW on CPU)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: table of GPUs)")
    p.add_argument("--label-images", type=int, default=None, help="images per labelling measurement (default 64 CUDA / 8 CPU)")
    p.add_argument("--eval-images", type=int, default=None, help="images per evaluation measurement (default 64 CUDA / 8 CPU)")
    p.add_argument("--pipeline-images", type=int, default=64, help="images for the input-pipeline rate (0: skip)")
    p.add_argument("--pipeline-root", default=DEFAULT_PIPELINE_ROOT, help="where the synthetic VOC set is made/reused")
    p.add_argument("--seed", type=int, default=0, help="seeds the random weights")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    args = p.parse_args(argv)
    checks = (("--size-scale", args.size_scale, args.size_scale > 0),
              ("--iters", args.iters, args.iters is None or args.iters >= 1),
              ("--warmup", args.warmup, args.warmup is None or args.warmup >= 0),
              ("--label-images", args.label_images, args.label_images is None or args.label_images >= 1),
              ("--eval-images", args.eval_images, args.eval_images is None or args.eval_images >= 1),
              ("--pipeline-images", args.pipeline_images, args.pipeline_images >= 0),
              ("--peak-tflops", args.peak_tflops, args.peak_tflops is None or args.peak_tflops > 0))
    for flag, value, ok in checks:
        if not ok:
            raise UserError(f"{flag} {value}: out of range; sizes, counts and peaks must be positive "
                            "(--warmup and --pipeline-images may be 0)")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    iters = args.iters if args.iters is not None else (20 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    label_images = args.label_images if args.label_images is not None else (64 if cuda else 8)
    eval_images = args.eval_images if args.eval_images is not None else (64 if cuda else 8)
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    ours_mode = "fp32" if args.amp_dtype == "fp32" else choose_mode(True, args.amp_dtype, device)
    reference = Variant("reference", reference_precision(device), torch.contiguous_format, fast_backends=False)
    ours = Variant("ours", Precision(ours_mode, device), memory_format_for(device, args.channels_last),
                   fast_backends=True, compile=args.compile)

    names = ["voc", "city"] if args.setting == "both" else [args.setting]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dmt-bench-labels-") as workdir:
        for name in names:
            setting = make_setting(name, args.size_scale)
            torch.manual_seed(args.seed)
            base = deeplab_v2(setting.num_classes, args.backbone, pretrained=None)
            res: dict[str, Any] = {"crop": list(setting.dmt.crop), "test_size": list(setting.test_size), "train": {}}
            for step, cfg in (("supervised", setting.supervised), ("dmt", setting.dmt)):
                rows = [measure_training(base, cfg, v, device, iters, warmup, peak) for v in (reference, ours)]
                layout = f"{cfg.pseudo}+{cfg.labelled}" if cfg.dmt else str(cfg.batch)
                res["train"][step] = {"batch_layout": layout, "rows": rows,
                                      "speedup": rows[0]["ms_per_it"] / rows[1]["ms_per_it"]}
            inference = [measure_inference(base, setting, v, device, label_images, eval_images, Path(workdir))
                         for v in (reference, ours)]
            res["labelling"] = {"rows": [row for lab, _ in inference for row in lab]}  # reference, ours 1, ours 2
            ours_rows = {r["passes"]: r for r in res["labelling"]["rows"] if r["variant"] == "ours"}
            res["labelling"]["one_pass_speedup"] = ours_rows[1]["images_per_s"] / ours_rows[2]["images_per_s"]
            res["evaluation"] = {"rows": [ev for _, ev in inference]}
            proj = {}
            for i, variant in enumerate((reference, ours)):
                proj[variant.name] = project(setting.plan, res["train"]["supervised"]["rows"][i]["ms_per_it"],
                                             res["train"]["dmt"]["rows"][i]["ms_per_it"],
                                             res["labelling"]["rows"][i]["images_per_s"],  # ref 2, ours 1 pass
                                             res["evaluation"]["rows"][i]["images_per_s"])
            proj["speedup"] = proj["reference"]["total_s"] / proj["ours"]["total_s"]
            res["projection"] = proj
            res["plan"] = asdict(setting.plan)
            results[name] = res
            del base
            release(device)

    pipeline = None
    if args.pipeline_images:
        crop = scaled(VOC_CROP_SIZE, 1.0)  # the real crop: this is about feeding the real GPU step
        pipeline = {"crop": list(crop), **input_pipeline.measure(args.pipeline_root, args.pipeline_images, crop)}

    header = (f"Segmentation speed — {time.strftime('%Y-%m-%d')}, device {device} ({device_name(device)}), "
              f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, backbone {args.backbone}, "
              f"size scale {args.size_scale:g}, {iters} timed iterations after {warmup} warm-up; "
              f"MFU peak: {_num(peak, 'g')} TFLOPS ({peak_source})")
    notes = [f"reference = the original 2020 loop: {reference.describe()}"
             + (", fp16 autocast + GradScaler" if cuda else " (fp16 autocast does not exist on CPU: fp32)")
             + ", no compile, no cuDNN autotuning, pageable batch copied per step, training confusion matrix and "
               "loss statistics read with .item() every step",
             f"ours = segmentation.training.dmt_step / supervised_step in utils.trainer.Trainer: {ours.describe()}"
             + (", cuDNN autotuning, pinned non-blocking copies" if cuda else "")
             + ", statistics kept on the device and read every ⌊epoch/10⌋ steps"]
    speedups = ", ".join(f"{n} {s} {r['train'][s]['speedup']:.2f}×" for n, r in results.items()
                         for s in ("supervised", "dmt"))
    lines = [header, "", *[f"- {n}" for n in notes], "", *training_table(results), "",
             f"ours/reference (training step speed): {speedups}", "", *throughput_table(results, pipeline), "",
             "labelling, ours one pass / two passes (same run): "
             + ", ".join(f"{n} {r['labelling']['one_pass_speedup']:.2f}×" for n, r in results.items())]
    workers = workers_lines(results, pipeline)
    if workers:
        lines += ["", *workers]
    lines += ["", "Projected wall time of whole runs (docs/method.md §7.3 counts × the rates above"
              + (f"; size scale {args.size_scale:g}, so not the real sizes" if args.size_scale != 1 else "") + "):",
              "", *projection_table(results)]
    print("\n".join(lines), flush=True)

    out = {"date": time.strftime("%Y-%m-%d"), "device": str(device), "device_name": device_name(device),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "backbone": args.backbone,
           "size_scale": args.size_scale, "iters": iters, "warmup": warmup, "peak_tflops": peak,
           "peak_source": peak_source, "settings": results, "input_pipeline": pipeline}
    if args.json:
        write_text_atomic(args.json, json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main))
