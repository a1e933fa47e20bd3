"""The host side of the batched train transform (:mod:`classification.batch_augment`, docs/method.md §6.2):
the per-image random choices and the batch that carries them to the device.

The choices are not Python ``random``'s stream: they are drawn on the host, vectorised, from a 63-bit
key per sample (drawn under the sample's ``(seed, epoch, index)`` seed), by a SplitMix64 counter
(:func:`uniforms`), with the original's distribution: ops uniform over the 16 with replacement,
m ~ U{1..m_max}, fair signs, crop offsets U{0..8}, flip 0.5, Cutout centres U[0, 32)². So a run is
reproducible and resumable (the draws depend on the sample's seed only, not on the batch it lands
in or the worker count), but its images differ from the PIL path's. :class:`RawBatch` holds the
uint8 images, the choices and, per RandAugment stage, the images' order sorted by op group.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from classification.augment import CROP_PADDING, CROP_SIZE, DEFAULT_M_MAX, DEFAULT_N, GEOMETRIC_OPS, RANDAUGMENT_OPS

SIZE = CROP_SIZE                                   # CIFAR images are 32×32, so is the crop
PIXELS = SIZE * SIZE
OP_NAMES: tuple[str, ...] = tuple(name for name, _, _ in RANDAUGMENT_OPS)
OP_INDEX = {name: i for i, name in enumerate(OP_NAMES)}
LUT_OPS = ("AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd", "Contrast", "Brightness")
IMAGE_OPS = ("Color", "Sharpness", "CutoutAbs")
GROUP_ORDER: tuple[str, ...] = GEOMETRIC_OPS + LUT_OPS + IMAGE_OPS   # the order of the sorted groups
assert sorted(GROUP_ORDER) == sorted(OP_NAMES)
RANK = np.array([GROUP_ORDER.index(name) for name in OP_NAMES], dtype=np.int64)  # op index -> group position
CROP_RANGE = 2 * CROP_PADDING + 1                  # offsets 0..8 of the padded 40×40 image
DRAWS_FIXED = 4                                    # crop y, crop x, flip, m
DRAWS_PER_OP = 4                                   # op, sign, Cutout centre x, y

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniforms(seeds: np.ndarray, count: int) -> np.ndarray:
    """(B, count) float64 uniforms in [0, 1): draw k of sample b is SplitMix64 output k + 1 of the
    stream seeded with ``seeds[b]`` (53 high bits), so each sample's draws depend on its key only."""
    state = np.asarray(seeds, dtype=np.uint64)[:, None] + np.arange(1, count + 1, dtype=np.uint64)[None] * _GOLDEN
    with np.errstate(over="ignore"):
        z = (state ^ (state >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


@dataclass
class AugmentParams:
    """Per-image choices of one batch (host numpy): crop offsets into the 40×40 padded image, flip,
    magnitude m, and per RandAugment stage k the op index (into ``RANDAUGMENT_OPS``), sign (±1) and
    CutoutAbs centre (x, y)."""

    crop_y: np.ndarray
    crop_x: np.ndarray
    flip: np.ndarray
    m: np.ndarray
    ops: np.ndarray       # (B, n)
    signs: np.ndarray     # (B, n)
    centres: np.ndarray   # (B, n, 2) float64


def draw_params(seeds: np.ndarray, n: int = DEFAULT_N, m_max: int = DEFAULT_M_MAX) -> AugmentParams:
    """The choices of :func:`classification.augment.train_transform` with the original's distribution:
    RandomCrop offsets U{0..8}², flip with p = 0.5, m ~ U{1..m_max} once per image, n ops uniform over
    the 16 with replacement, sign − when a uniform is > 0.5, CutoutAbs centre U[0, 32)²."""
    u = uniforms(seeds, DRAWS_FIXED + DRAWS_PER_OP * n)
    per_op = u[:, DRAWS_FIXED:].reshape(len(u), n, DRAWS_PER_OP)
    return AugmentParams(
        crop_y=np.floor(u[:, 0] * CROP_RANGE).astype(np.int64),
        crop_x=np.floor(u[:, 1] * CROP_RANGE).astype(np.int64),
        flip=u[:, 2] < 0.5,
        m=1 + np.floor(u[:, 3] * m_max).astype(np.int64),
        ops=np.floor(per_op[..., 0] * len(OP_NAMES)).astype(np.int64),
        signs=np.where(per_op[..., 1] > 0.5, -1, 1).astype(np.int64),
        centres=per_op[..., 2:] * SIZE)


class RawBatch:
    """A batch for the device: uint8 images (B, 3, 32, 32) and their choices as a few tensors, plus
    per RandAugment stage the permutation that sorts the images by op group and the group starts
    (host ints, so the device never reports a size back)."""

    def __init__(self, images: torch.Tensor, ints: torch.Tensor, centres: torch.Tensor, orders: torch.Tensor,
                 starts: tuple[tuple[int, ...], ...]) -> None:
        self.images, self.ints, self.centres, self.orders, self.starts = images, ints, centres, orders, starts

    @classmethod
    def build(cls, images: np.ndarray, params: AugmentParams) -> "RawBatch":
        n = params.ops.shape[1]
        ints = np.concatenate([np.stack([params.crop_y, params.crop_x, params.flip.astype(np.int64), params.m], 1),
                               params.ops, params.signs], axis=1)
        ranks = RANK[params.ops]                                               # (B, n)
        orders = np.stack([np.argsort(ranks[:, k], kind="stable") for k in range(n)]) if len(images) else \
            np.zeros((n, 0), np.int64)
        starts = tuple(tuple(int(s) for s in np.concatenate([[0], np.cumsum(np.bincount(ranks[:, k],
                                                                                        minlength=len(GROUP_ORDER)))]))
                       for k in range(n))
        return cls(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(ints),
                   torch.from_numpy(np.ascontiguousarray(params.centres)), torch.from_numpy(orders), starts)

    def __len__(self) -> int:
        return self.images.shape[0]

    def pin_memory(self) -> "RawBatch":
        return RawBatch(self.images.pin_memory(), self.ints.pin_memory(), self.centres.pin_memory(),
                        self.orders.pin_memory(), self.starts)

    def to(self, device: torch.device) -> "RawBatch":
        nb = dict(device=device, non_blocking=True)
        return RawBatch(self.images.to(**nb), self.ints.to(**nb), self.centres.to(**nb), self.orders.to(**nb),
                        self.starts)

