"""Synthetic CIFAR-10 python batches: 32x32 images, one object each, class-balanced."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from data.synthetic.common import (SPLIT_CODES, check_count, check_workers, generate_atomically, parallel_map,
                                   sample_rng, write_bytes)
from data.synthetic.drawing import SHAPES, Style, add_clutter, draw_shape, finish_image, smooth_background

CIFAR_LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck")
# CIFAR class k = CIFAR_STYLES[k]: 5 shapes x {solid, stripes}.
CIFAR_STYLES: list[Style] = [(s, t) for t in ("solid", "stripes") for s in SHAPES[:5]]
CIFAR_BATCHES = 5


def render_cifar_sample(cls: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One 32x32 uint8 RGB image with a single object of CIFAR class ``cls``."""
    image = smooth_background(size, size, rng)
    add_clutter(image, rng, int(rng.integers(1, 5)), (0.15 * size, 0.45 * size))
    radius = rng.uniform(0.22, 0.4) * size
    cx, cy = (0.5 + rng.uniform(-0.12, 0.12, size=2)) * size
    draw_shape(image, CIFAR_STYLES[cls], cx, cy, radius, rng,
               period=float(rng.uniform(3.0, 4.5)))
    add_clutter(image, rng, int(rng.integers(0, 3)), (0.1 * size, 0.3 * size))  # faint occluders
    return finish_image(image, rng)


def _cifar_job(job: tuple) -> np.ndarray:
    """(seed, split, index, class) -> one CIFAR row: 1024 R, then 1024 G, then 1024 B values."""
    seed, split, index, cls = job
    image = render_cifar_sample(cls, sample_rng(seed, "cifar10", split, index))
    return image.transpose(2, 0, 1).reshape(-1)


def _cifar_split(seed: int, split: str, per_class: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,), data uint8 (n, 3072)) for a class-balanced, shuffled split."""
    order_rng = sample_rng(seed, "cifar10", "order", SPLIT_CODES[split])
    labels = order_rng.permutation(np.repeat(np.arange(len(CIFAR_STYLES)), per_class))
    jobs = [(seed, split, index, int(cls)) for index, cls in enumerate(labels)]
    data = np.stack(list(parallel_map(_cifar_job, jobs, workers))).astype(np.uint8)
    return labels, data


def _cifar_batch(batch_label: str, labels: np.ndarray, data: np.ndarray, offset: int) -> dict:
    names = [f"synthetic_{CIFAR_LABEL_NAMES[c]}_s_{offset + i:06d}.png".encode("ascii")
             for i, c in enumerate(labels.tolist())]
    return {b"batch_label": batch_label.encode("ascii"), b"labels": [int(c) for c in labels],
            b"data": np.ascontiguousarray(data), b"filenames": names}


def make_cifar10(root: str | os.PathLike, num_train_per_class: int = 100,
                 num_test_per_class: int = 20, seed: int = 0, workers: int = 1) -> Path:
    """Write synthetic CIFAR-10 python batches; return ``<root>/cifar-10-batches-py``.

    Training images (``num_train_per_class`` x 10, shuffled) are split over the 5 data batches as
    evenly as possible; ``test_batch`` holds ``num_test_per_class`` x 10.
    """
    check_count(num_train_per_class, "num_train_per_class")
    check_count(num_test_per_class, "num_test_per_class")
    check_workers(workers)
    args = {"num_train_per_class": num_train_per_class, "num_test_per_class": num_test_per_class,
            "seed": seed}

    def build(staging: Path) -> None:
        out = staging / "cifar-10-batches-py"
        labels, data = _cifar_split(seed, "train", num_train_per_class, workers)
        bounds = np.linspace(0, len(labels), CIFAR_BATCHES + 1).astype(int)
        for b in range(CIFAR_BATCHES):
            lo, hi = bounds[b], bounds[b + 1]
            batch = _cifar_batch(f"training batch {b + 1} of {CIFAR_BATCHES}", labels[lo:hi], data[lo:hi], lo)
            write_bytes(out / f"data_batch_{b + 1}", pickle.dumps(batch, protocol=2))
        labels, data = _cifar_split(seed, "test", num_test_per_class, workers)
        test = _cifar_batch("testing batch 1 of 1", labels, data, 0)
        write_bytes(out / "test_batch", pickle.dumps(test, protocol=2))
        meta = {b"num_cases_per_batch": int(bounds[1] - bounds[0]),
                b"label_names": [n.encode("ascii") for n in CIFAR_LABEL_NAMES], b"num_vis": 3072}
        write_bytes(out / "batches.meta", pickle.dumps(meta, protocol=2))

    generate_atomically(root, "cifar10", args, ["cifar-10-batches-py"], build)
    return Path(root) / "cifar-10-batches-py"
