"""Synthetic PASCAL VOC 2012 (trainaug layout): JPEG images, palette-PNG labels, id lists."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from data.synthetic.common import (check_count, check_size, check_workers, encode, generate_atomically,
                                   parallel_map, sample_rng, write_bytes, write_lines)
from data.synthetic.drawing import (SHAPES, TEXTURES, Style, add_clutter, boundary_band, draw_shape, finish_image,
                                    smooth_background)
from segmentation.palette import VOC_PALETTE
from utils.errors import UserError

VOC_NUM_CLASSES = 21
# VOC class c (1..20) = VOC_STYLES[c - 1]: 5 shapes x 4 textures.
VOC_STYLES: list[Style] = [(s, t) for s in SHAPES[:5] for t in TEXTURES[:4]]
VOC_DEFAULT_SIZE_RANGE = (72, 128)


def render_voc_sample(h: int, w: int, rng: np.random.Generator, first_class: int | None = None,
                      border: int = 1, class_ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One VOC-like (image uint8 (h, w, 3), label uint8 (h, w)) pair with 1-4 objects.

    ``first_class`` (1..20) forces one object (drawn last, on top) to that class, which keeps the
    classes balanced and guarantees that every class appears in any 20 consecutive images.
    ``class_ids``: objects are drawn from these classes only (an easier set); default all 20.
    """
    image = smooth_background(h, w, rng)
    side = min(h, w)
    add_clutter(image, rng, int(rng.integers(2, 7)), (0.08 * side, 0.35 * side))
    n_objects = int(rng.integers(1, 5))
    if class_ids is None:
        classes = [int(c) for c in rng.integers(1, VOC_NUM_CLASSES, n_objects)]
    else:
        classes = [int(class_ids[k]) for k in rng.integers(0, len(class_ids), n_objects)]
    if first_class is not None:
        classes[-1] = first_class
    classes_map = np.zeros((h, w), dtype=np.uint8)
    instances = np.zeros((h, w), dtype=np.int32)
    for k, cls in enumerate(classes, start=1):
        radius = rng.uniform(0.12, 0.3) * side
        cx, cy = rng.uniform(0.12, 0.88) * w, rng.uniform(0.12, 0.88) * h
        drawn = draw_shape(image, VOC_STYLES[cls - 1], cx, cy, radius, rng)
        if drawn is not None:
            region, mask, _ = drawn
            classes_map[region][mask] = cls
            instances[region][mask] = k
    classes_map[boundary_band(instances, border)] = 255
    return finish_image(image, rng), classes_map


def _voc_job(job: tuple) -> tuple[bytes, bytes]:
    """(seed, split, index, size or None, size_range, class ids or None) -> (JPEG bytes, palette PNG bytes)."""
    seed, split, index, size, size_range, class_ids = job
    rng = sample_rng(seed, "voc", split, index)
    if size is not None:
        h, w = size
    else:
        h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    first = 1 + index % (VOC_NUM_CLASSES - 1) if class_ids is None else class_ids[index % len(class_ids)]
    image, label = render_voc_sample(h, w, rng, first_class=first, class_ids=class_ids)
    png = Image.fromarray(label, "L").convert("P")
    png.putpalette(VOC_PALETTE.reshape(-1).tolist())
    return encode(Image.fromarray(image, "RGB"), "JPEG", quality=90), encode(png, "PNG")


def voc_ids(num_train: int, num_val: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Sorted (trainaug, train, val) id lists of the form ``{year}_{6 digits}``, disjoint splits."""
    rng = sample_rng(seed, "voc", "ids", 0)
    codes = rng.choice(5 * 10000, size=num_train + num_val, replace=False)
    ids = [f"{2007 + int(c) // 10000}_{int(c) % 10000:06d}" for c in codes]
    trainaug, val = sorted(ids[:num_train]), sorted(ids[num_train:])
    n_train = max(1, round(0.14 * num_train))
    train = sorted(str(i) for i in rng.choice(trainaug, size=n_train, replace=False))
    return trainaug, train, val


def make_voc(root: str | os.PathLike, num_train: int = 200, num_val: int = 50,
             size: tuple[int, int] | None = None,
             size_range: tuple[int, int] = VOC_DEFAULT_SIZE_RANGE, seed: int = 0,
             workers: int = 1, classes: Sequence[int] | None = None) -> Path:
    """Write a synthetic VOC 2012 (trainaug) dataset; return ``<root>/VOCdevkit/VOC2012``.

    ``size`` = (h, w) fixes every image's size; otherwise h and w are drawn independently and
    uniformly from the integers in ``size_range`` (inclusive), like VOC's varying image sizes.
    ``workers`` > 1 renders in that many processes (identical output). ``classes``: only these
    object classes (ids in 1..20) occur; the label files keep VOC's 21-class format. Class c is
    shape ``SHAPES[(c - 1) // 4]`` with texture ``TEXTURES[(c - 1) % 4]``, so e.g. 1 6 11 16 17
    differ in shape and texture while 1 2 3 4 are all discs.
    """
    if classes is not None:
        classes = sorted({int(c) for c in classes})
        if not classes or classes[0] < 1 or classes[-1] > VOC_NUM_CLASSES - 1:
            raise UserError(f"classes={classes}: VOC object classes are 1..20; pass some of those")
    check_count(num_train, "num_train")
    check_count(num_val, "num_val")
    check_workers(workers)
    if size is not None:
        size = (int(size[0]), int(size[1]))
        check_size(size[0], size[1], "size")
    else:
        lo, hi = (int(v) for v in size_range)
        check_size(lo, lo, "size_range")
        if hi < lo:
            raise UserError(f"size_range={lo}..{hi}: the upper end is below the lower; swap them")
        size_range = (lo, hi)
    args = {"num_train": num_train, "num_val": num_val, "size": size,
            "size_range": None if size is not None else size_range, "seed": seed}
    if classes is not None:
        args["classes"] = classes

    def build(staging: Path) -> None:
        base = staging / "VOCdevkit" / "VOC2012"
        trainaug, train, val = voc_ids(num_train, num_val, seed)
        for split, ids in (("train", trainaug), ("val", val)):
            jobs = [(seed, split, index, size, size_range, classes) for index in range(len(ids))]
            for image_id, (jpeg, png) in zip(ids, parallel_map(_voc_job, jobs, workers)):
                write_bytes(base / "JPEGImages" / f"{image_id}.jpg", jpeg)
                write_bytes(base / "SegmentationClassAug" / f"{image_id}.png", png)
        lists = base / "ImageSets" / "Segmentation"
        write_lines(lists / "trainaug.txt", trainaug)
        write_lines(lists / "train.txt", train)
        write_lines(lists / "val.txt", val)

    generate_atomically(root, "voc", args, ["VOCdevkit"], build)
    return Path(root) / "VOCdevkit" / "VOC2012"
