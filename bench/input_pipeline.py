"""CPU input pipeline rate: decode + augment images per second in one DataLoader worker (docs/method.md §6.1).

On a synthetic VOC set (:func:`data.synthetic.make_voc`, 375×500 JPEG images with palette-PNG
labels) the project's training items are built exactly as its loaders build them
(:class:`segmentation.datasets.VOCSegmentation` with :func:`segmentation.transforms.train_transforms`:
decode, RandomScale, PadCrop to the crop, flip, normalise), in one thread as in a DataLoader worker:

* a *labelled* item: JPEG + PNG label;
* a *pseudo* item: JPEG + the labeller's float32 H×W×2 ``.npy`` (written once beside the set).

Each is also timed reading and decoding only (no transform), which splits a worker's time into
decoding and augmentation. Dividing a training step rate (images/s) by these gives the workers a
loader needs to keep up.
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from data.synthetic import make_voc
from segmentation.datasets import VOCSegmentation, read_pseudo, read_rgb
from segmentation.run_config import VOC_NUM_CLASSES
from segmentation.transforms import IGNORE_INDEX, train_transforms
from utils.io import read_id_list, save_npy_atomic

IMAGE_SIZE = (375, 500)   # a typical VOC image (h, w)
NUM_VAL = 8


def synthetic_voc(root: str | Path, images: int) -> tuple[Path, list[str]]:
    """The synthetic VOC folder under ``root`` (made once; reused when it exists) and ``images`` ids."""
    voc = make_voc(root, num_train=images, num_val=NUM_VAL, size=IMAGE_SIZE)
    ids = read_id_list(voc / "ImageSets" / "Segmentation" / "trainaug.txt", "delete the folder and rerun")
    return voc, ids[:images]


def write_pseudo_files(folder: Path, ids: list[str], seed: int = 0) -> Path:
    """A float32 H×W×2 (label, confidence) file per id, as the labeller writes (docs/method.md §2.1)."""
    rng = np.random.default_rng(seed)
    for sample_id in ids:
        path = folder / f"{sample_id}.npy"
        if path.is_file():
            continue
        label = rng.integers(0, VOC_NUM_CLASSES, IMAGE_SIZE).astype(np.float32)
        label[rng.random(IMAGE_SIZE) < 0.2] = IGNORE_INDEX
        confidence = rng.random(IMAGE_SIZE, dtype=np.float32)
        save_npy_atomic(path, np.stack([label, confidence], axis=-1))
    return folder


def per_second(load: Callable[[int], object], count: int, seed: int = 0) -> float:
    """Calls of ``load(index)`` for ``index`` in ``range(count)`` per second, single-threaded as in
    a DataLoader worker (torch set to 1 thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        random.seed(seed)
        load(0)  # warm-up: imports, first allocation
        start = time.perf_counter()
        for index in range(count):
            load(index)
        return count / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def decode_labelled(dataset: VOCSegmentation, index: int) -> None:
    """What a labelled item reads before any transform: JPEG decode + checked PNG label."""
    sample_id = dataset.ids[index]
    rgb = read_rgb(dataset.image_path(sample_id))
    dataset.read_label(sample_id, rgb.shape[:2])


def decode_pseudo(dataset: VOCSegmentation, index: int) -> None:
    """What a pseudo item reads before any transform: JPEG decode + checked ``.npy``."""
    sample_id = dataset.ids[index]
    rgb = read_rgb(dataset.image_path(sample_id))
    read_pseudo(dataset.pseudo_path(sample_id), dataset.expected_pseudo_hw(*rgb.shape[:2]), dataset.num_classes)


def measure(root: str | Path, images: int, crop: tuple[int, int]) -> dict[str, float]:
    """Images/s of one worker at ``crop`` (VOC train transforms): whole items
    (``labelled_per_worker``, ``pseudo_per_worker``) and their reading/decoding alone
    (``*_decode_per_worker``); the difference is the augmentation (scale, crop, flip, normalise)."""
    voc, ids = synthetic_voc(root, images)
    pseudo_dir = write_pseudo_files(Path(root) / "bench_pseudo", ids)
    transforms = train_transforms("voc", crop)
    labelled = VOCSegmentation(voc, ids, transforms)
    pseudo = VOCSegmentation(voc, ids, transforms, pseudo_dir=pseudo_dir)
    n = len(ids)
    return {"images": n,
            "labelled_per_worker": per_second(labelled.__getitem__, n),
            "pseudo_per_worker": per_second(pseudo.__getitem__, n),
            "labelled_decode_per_worker": per_second(lambda i: decode_labelled(labelled, i), n),
            "pseudo_decode_per_worker": per_second(lambda i: decode_pseudo(pseudo, i), n)}


def workers_needed(images_per_s: float, per_worker: float) -> int:
    """Workers whose combined rate reaches ``images_per_s``."""
    return max(1, math.ceil(images_per_s / per_worker))
