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

What the two columns run is described in :mod:`bench.training_steps`, the labelling and evaluation
measurements in :mod:`bench.segmentation_rates`, the tables in :mod:`bench.segmentation_tables`.
MFU = model FLOPs of one step (:class:`torch.utils.flop_counter.FlopCounterMode`: convolutions and
matmuls, forward + backward) per second over the device's dense bf16 peak (a table of known GPUs,
or ``--peak-tflops``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from bench import input_pipeline
from bench.common import (SEED, add_channels_last, add_json, check_ranges, fmt, parser, release,
                          resolve, run_fields, write_json)
from bench.run_projection import project
from bench.segmentation_rates import Variant, make_setting, measure_inference, measure_training, scaled
from bench.segmentation_tables import projection_table, throughput_table, training_table, workers_lines
from bench.training_steps import reference_precision
from segmentation.models import BACKBONES, deeplab_v2
from segmentation.run_config import VOC_CROP_SIZE
from utils.amp import Precision, choose_mode
from utils.cli import memory_format_for
from utils.cost import device_name
from utils.errors import run_cli

# Dense bf16 tensor-core peaks (TFLOPS), matched in order against torch.cuda.get_device_name().
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0),
    ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0),
)
DEFAULT_PIPELINE_ROOT = "/tmp/dmt_bench_voc"
# flag: (default on CUDA, default on CPU)
DEVICE_DEFAULTS = {"iters": (20, 2), "warmup": (5, 1), "label_images": (64, 8), "eval_images": (64, 8)}


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


# ------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser("python -m bench.segmentation", __doc__)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet101")
    p.add_argument("--setting", choices=["voc", "city", "both"], default="both")
    p.add_argument("--size-scale", type=float, default=1.0, help="multiply every crop/test size (CPU: e.g. 0.1)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per step (default: 20 on CUDA, 2 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default: 5 on CUDA, 1 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile ours (warm-up absorbs the compile time)")
    p.add_argument("--amp-dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="ours' precision (auto: the project's --mixed-precision default, bf16 where supported)")
    add_channels_last(p)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: table of GPUs)")
    p.add_argument("--label-images", type=int, default=None, help="images per labelling measurement (default 64 CUDA / 8 CPU)")
    p.add_argument("--eval-images", type=int, default=None, help="images per evaluation measurement (default 64 CUDA / 8 CPU)")
    p.add_argument("--pipeline-images", type=int, default=64, help="images for the input-pipeline rate (0: skip)")
    p.add_argument("--pipeline-root", default=DEFAULT_PIPELINE_ROOT, help="where the synthetic VOC set is made/reused")
    p.add_argument("--seed", type=int, default=SEED, help="seeds the random weights")
    add_json(p)
    args = p.parse_args(argv)
    check_ranges((("--size-scale", args.size_scale, args.size_scale > 0),
                  ("--iters", args.iters, args.iters is None or args.iters >= 1),
                  ("--warmup", args.warmup, args.warmup is None or args.warmup >= 0),
                  ("--label-images", args.label_images, args.label_images is None or args.label_images >= 1),
                  ("--eval-images", args.eval_images, args.eval_images is None or args.eval_images >= 1),
                  ("--pipeline-images", args.pipeline_images, args.pipeline_images >= 0),
                  ("--peak-tflops", args.peak_tflops, args.peak_tflops is None or args.peak_tflops > 0)),
                 "; sizes, counts and peaks must be positive (--warmup and --pipeline-images may be 0)")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve(args, DEVICE_DEFAULTS)
    cuda = device.type == "cuda"
    iters, warmup, label_images, eval_images = args.iters, args.warmup, args.label_images, args.eval_images
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
              f"MFU peak: {fmt(peak, 'g')} TFLOPS ({peak_source})")
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

    out = {**run_fields(device), "threads": torch.get_num_threads(), "backbone": args.backbone,
           "size_scale": args.size_scale, "iters": iters, "warmup": warmup, "peak_tflops": peak,
           "peak_source": peak_source, "settings": results, "input_pipeline": pipeline}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main))
