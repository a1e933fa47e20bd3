"""Benchmark: CBC thresholds (utils.pseudo_labels.class_balanced_thresholds) against a straightforward
per-class numpy sort, on the same samples; checks that both give identical thresholds.

    python -m bench.thresholds [--samples 10000000] [--classes 21] [--ratio 0.2] [--repeats 3] [--device cpu]
"""
from __future__ import annotations

import sys
import time
from typing import Sequence

import numpy as np
import torch

from utils.cli import ArgumentParser
from utils.errors import run_cli
from utils.pseudo_labels import class_balanced_thresholds
from utils.runtime import resolve_device


def numpy_reference(conf: np.ndarray, lab: np.ndarray, num_classes: int, ratio: float) -> np.ndarray:
    """The original's way: mask each class, sort it, index it (docs/method.md §2.1 step 5)."""
    out = np.full(num_classes, 1e-5, dtype=np.float32)
    for c in range(num_classes):
        p = np.sort(conf[lab == c])
        n = len(p)
        if n == 0:
            continue
        if ratio >= 1:
            out[c] = p[0]
        elif n * ratio >= 1:
            out[c] = p[n - int(n * ratio) - 1]
    return out


def best_of(fn, repeats: int, sync=lambda: None) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: Sequence[str] | None = None) -> dict:
    p = ArgumentParser(prog="python -m bench.thresholds", description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=10_000_000)
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    lab = rng.integers(0, args.classes, args.samples).astype(np.int64)
    conf = rng.uniform(1.0 / args.classes, 1.0, args.samples).astype(np.float32)
    conf_t, lab_t = torch.from_numpy(conf).to(device), torch.from_numpy(lab).to(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    ours = class_balanced_thresholds(conf_t, lab_t, args.classes, args.ratio).cpu().numpy()
    ref = numpy_reference(conf, lab, args.classes, args.ratio)
    identical = bool(np.array_equal(ours, ref))
    t_ours = best_of(lambda: class_balanced_thresholds(conf_t, lab_t, args.classes, args.ratio), args.repeats, sync)
    t_ref = best_of(lambda: numpy_reference(conf, lab, args.classes, args.ratio), args.repeats)
    print(f"CBC thresholds, {args.samples:,} samples, {args.classes} classes, ratio {args.ratio}, "
          f"device {device}, torch threads {torch.get_num_threads()} (best of {args.repeats})")
    print(f"| implementation | seconds |\n|---|---|\n| numpy per-class sort (reference) | {t_ref:.3f} |\n"
          f"| class_balanced_thresholds (torch) | {t_ours:.3f} |")
    print(f"speed-up: {t_ref / t_ours:.2f}x; identical thresholds: {identical}")
    return {"ours_s": t_ours, "reference_s": t_ref, "speedup": t_ref / t_ours, "identical": identical}


if __name__ == "__main__":
    sys.exit(run_cli(main))
