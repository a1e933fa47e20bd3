"""The batched train transform (:mod:`classification.batch_augment` is its loader side, docs/method.md §6.2):
the per-image random choices, drawn on the host in the collate, and :class:`BatchRandAugment`, which
applies crop 32 (pad 4, fill 128) → flip 0.5 → RandomRandAugment(n, m_max) → Normalize to a whole
:class:`RawBatch` on the device.

**The draws** (:func:`draw_params`, called by the loader's collate). The choices are not Python ``random``'s stream: they are drawn on the host, vectorised, from a 63-bit
key per sample (drawn under the sample's ``(seed, epoch, index)`` seed), by a SplitMix64 counter
(:func:`uniforms`), with the original's distribution: ops uniform over the 16 with replacement,
m ~ U{1..m_max}, fair signs, crop offsets U{0..8}, flip 0.5, Cutout centres U[0, 32)². So a run is
reproducible and resumable (the draws depend on the sample's seed only, not on the batch it lands
in or the worker count), but its images differ from the PIL path's. :class:`RawBatch` holds the
uint8 images, the choices and, per RandAugment stage, the images' order sorted by op group.

**The ops** (:class:`BatchRandAugment`, in the training step). Every op gives the same uint8 pixels as the PIL op of :func:`classification.augment.train_transform`
for the same per-image choices. The colour ops are per-image (per channel) 256-entry lookup tables
built from Pillow's own integer / float32 formulas (AutoContrast, Equalize, Invert, Posterize,
Solarize, SolarizeAdd, Contrast: blend with the rounded mean of the L image, Brightness: blend with
black) or the same float32 blend on the whole image (Color: blend with the L image
``(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16``, Sharpness: blend with the 3×3 SMOOTH filter, borders
unfiltered, accumulated in Pillow's order). Rotate, ShearX/Y and TranslateX/Yabs copy pixels
(nearest, black outside): each is an index map, read off the PIL op itself once per (op, m, sign)
(:func:`geometric_index_table`), so one gather with the maps of every image applies all five kinds
at once. CutoutAbs fills the original's inclusive box. The images are grouped by op (one stable
sort per RandAugment stage, its group sizes known on the host, so there is no device-to-host sync)
and each group's kernel runs on a contiguous slice: no per-image Python on the device side.
``tests/test_batch_augment.py`` checks each op against the PIL op on random images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from classification.augment import (CIFAR10_MEAN, CIFAR10_STD, CROP_PADDING, CROP_SIZE, CUTOUT_ABS_FILL, DEFAULT_M_MAX,
                                    DEFAULT_N, GEOMETRIC_OPS, PAD_FILL, RANDAUGMENT_OPS, SOLARIZE_ADD_THRESHOLD,
                                    geometric_op, op_magnitude, posterize_bits)

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


# ------------------------------------------------------------------------------ the device ops
def geometric_index_table(m_max: int) -> torch.Tensor:
    """(5 · m_max · 2, 1024) int64: for geometric op g (of ``GEOMETRIC_OPS``), magnitude m and sign s
    (row ``(g · m_max + m − 1) · 2 + (s < 0)``), the flat source pixel of each output pixel, −1
    where the PIL op writes black. Read off :func:`classification.augment.geometric_op` on an image
    whose pixels hold their own coordinates (R = y, G = x, B = 255 marks "inside")."""
    y, x = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    coords = Image.fromarray(np.stack([y, x, np.full_like(y, 255)], axis=-1).astype(np.uint8), "RGB")
    rows = []
    for name in GEOMETRIC_OPS:
        for m in range(1, m_max + 1):
            for sign in (1, -1):
                out = np.asarray(geometric_op(name, coords, sign * op_magnitude(name, m))).astype(np.int64)
                rows.append(np.where(out[..., 2] == 255, out[..., 0] * SIZE + out[..., 1], -1).reshape(-1))
    return torch.from_numpy(np.stack(rows))


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's ``Image.blend(degenerate, image, factor)`` on 8-bit data: (uint8) clip(d + f·(i − d)),
    float32 arithmetic in that order, truncated (``ImageEnhance``)."""
    return (degenerate + factor * (image - degenerate)).clamp_(0, 255).trunc_()


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB → L, (19595 R + 38470 G + 7471 B + 0x8000) >> 16, of (G, 3, P) int64 -> (G, 1, P)."""
    return (x[:, 0:1] * 19595 + x[:, 1:2] * 38470 + x[:, 2:3] * 7471 + 0x8000) >> 16


class BatchRandAugment:
    """The train transform on a :class:`RawBatch` on ``device``; ``__call__`` returns normalised float32
    (B, 3, 32, 32). Tables (per-op magnitudes, geometric index maps) are built once here."""

    def __init__(self, device: torch.device | str, n: int = DEFAULT_N, m_max: int = DEFAULT_M_MAX) -> None:
        if n < 1 or m_max < 1:
            raise ValueError(f"BatchRandAugment needs n >= 1 and m_max >= 1, got n={n}, m_max={m_max}")
        self.device, self.n, self.m_max = torch.device(device), n, m_max
        dev = self.device
        values = [[op_magnitude(name, m) for m in range(1, m_max + 1)] for name in OP_NAMES]
        self.v64 = torch.tensor(values, dtype=torch.float64, device=dev)            # (16, m_max), v of op, m
        self.v32 = self.v64.float()                                                  # ImageEnhance's C float factor
        self.posterize_step = torch.tensor([2 ** (8 - posterize_bits(op_magnitude("Posterize", m)))
                                            for m in range(1, m_max + 1)], dtype=torch.int64, device=dev)
        self.geometric = geometric_index_table(m_max).to(dev)
        self.rank = torch.as_tensor(RANK, device=dev)                                # op index -> group position
        self.levels = torch.arange(256, device=dev)                                  # int64 0..255
        self.levels64 = self.levels.double()
        self.levels32 = self.levels.float()
        self.coord = torch.arange(SIZE, device=dev)
        self.mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float32, device=dev).view(-1, 1, 1)
        self.std = torch.tensor(CIFAR10_STD, dtype=torch.float32, device=dev).view(-1, 1, 1)
        self.cutout_fill = torch.tensor(CUTOUT_ABS_FILL, dtype=torch.uint8, device=dev).view(1, 3, 1, 1)

    # --------------------------------------------------------------- whole-batch steps
    def crop_flip(self, images: torch.Tensor, crop_y: torch.Tensor, crop_x: torch.Tensor,
                  flip: torch.Tensor) -> torch.Tensor:
        """RandomCrop(32, padding 4, fill 128) at offsets (crop_y, crop_x) of the padded image, then a
        horizontal flip where ``flip``: one gather with per-image source indices."""
        b = images.shape[0]
        src_y = self.coord.view(1, SIZE, 1) + (crop_y - CROP_PADDING).view(b, 1, 1)
        cols = torch.where(flip.view(b, 1).bool(), SIZE - 1 - self.coord.view(1, SIZE), self.coord.view(1, SIZE))
        src_x = (cols + (crop_x - CROP_PADDING).view(b, 1)).view(b, 1, SIZE)
        inside = (src_y >= 0) & (src_y < SIZE) & (src_x >= 0) & (src_x < SIZE)       # (B, 32, 32)
        index = (src_y.clamp(0, SIZE - 1) * SIZE + src_x.clamp(0, SIZE - 1)).view(b, 1, PIXELS).expand(b, 3, PIXELS)
        out = images.reshape(b, 3, PIXELS).gather(2, index)
        return torch.where(inside.view(b, 1, PIXELS), out, PAD_FILL).view(b, 3, SIZE, SIZE)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """ToDtype(float32, scale=True) → Normalize, the same tensor calls as torchvision v2's."""
        return x.to(torch.float32).mul_(1.0 / 255).sub_(self.mean).div_(self.std)

    def __call__(self, raw: RawBatch) -> torch.Tensor:
        if len(raw) == 0:
            return torch.zeros((0, 3, SIZE, SIZE), dtype=torch.float32, device=self.device)
        raw = raw.to(self.device)
        ints = raw.ints
        x = self.crop_flip(raw.images, ints[:, 0], ints[:, 1], ints[:, 2])
        m = ints[:, 3]
        for k in range(self.n):
            order = raw.orders[k]
            ops = ints[order, DRAWS_FIXED + k]
            signs = ints[order, DRAWS_FIXED + self.n + k]
            done = self.stage(x[order], ops, m[order], signs, raw.centres[order, k], raw.starts[k])
            x = torch.empty_like(done).index_copy_(0, order, done)
        return self.normalise(x)

    # --------------------------------------------------------------- one RandAugment stage
    def stage(self, xs: torch.Tensor, ops: torch.Tensor, m: torch.Tensor, signs: torch.Tensor,
              centres: torch.Tensor, starts: Sequence[int]) -> torch.Tensor:
        """Apply each image's op to ``xs`` (B, 3, 32, 32) uint8, sorted by group: the images of group
        ``GROUP_ORDER[g]`` are rows ``starts[g]:starts[g + 1]``."""
        bounds = {name: (starts[g], starts[g + 1]) for g, name in enumerate(GROUP_ORDER)}
        pieces = []
        g0, g1 = bounds[GEOMETRIC_OPS[0]][0], bounds[GEOMETRIC_OPS[-1]][1]
        if g1 > g0:
            pieces.append(self.geometric_ops(xs[g0:g1], ops[g0:g1], m[g0:g1], signs[g0:g1]))
        l0, l1 = bounds[LUT_OPS[0]][0], bounds[LUT_OPS[-1]][1]
        if l1 > l0:
            luts = [self.lut(name, xs[s:e], m[s:e]) for name in LUT_OPS for s, e in [bounds[name]] if e > s]
            pieces.append(self.apply_lut(xs[l0:l1], torch.cat(luts)))
        for name in IMAGE_OPS:
            s, e = bounds[name]
            if e > s:
                pieces.append(self.image_op(name, xs[s:e], m[s:e], centres[s:e]))
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def geometric_ops(self, x: torch.Tensor, ops: torch.Tensor, m: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        """Rotate / ShearX / ShearY / TranslateXabs / TranslateYabs: one gather through each image's index map."""
        g = x.shape[0]
        kind = self.rank[ops]                        # position in GEOMETRIC_OPS
        rows = (kind * self.m_max + m - 1) * 2 + (signs < 0).long()
        index = self.geometric[rows]                                                 # (G, 1024), -1 outside
        out = x.reshape(g, 3, PIXELS).gather(2, index.clamp(min=0).view(g, 1, PIXELS).expand(g, 3, PIXELS))
        return torch.where(index.view(g, 1, PIXELS) >= 0, out, 0).view(g, 3, SIZE, SIZE)

    @staticmethod
    def apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
        """out[b, c, p] = lut[b, c, x[b, c, p]] with ``lut`` (G, 3, 256) uint8."""
        g = x.shape[0]
        return lut.gather(2, x.reshape(g, 3, PIXELS).long()).view(g, 3, SIZE, SIZE)

    def lut(self, name: str, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """(G, 3, 256) uint8 lookup tables of op ``name`` for the images ``x`` at magnitudes ``m``
        (Pillow's ImageOps / ImageEnhance formulas)."""
        g = x.shape[0]
        op = OP_INDEX[name]
        levels = self.levels.view(1, 1, 256)
        if name == "Invert":
            lut = (255 - levels).expand(g, 3, 256)
        elif name == "Posterize":                                   # i & ~(2^(8 - bits) - 1)
            step = self.posterize_step[m - 1].view(g, 1, 1)
            lut = (levels - levels % step).expand(g, 3, 256)
        elif name == "Solarize":                                    # i if i < v else 255 - i
            v = self.v64[op, m - 1].view(g, 1, 1)
            lut = torch.where(self.levels64.view(1, 1, 256) < v, levels, 255 - levels).expand(g, 3, 256)
        elif name == "SolarizeAdd":                                 # uint8(clip(i + v)), then solarize at 128
            v = self.v64[op, m - 1].view(g, 1, 1)
            added = (self.levels64.view(1, 1, 256) + v).clamp_(0, 255).trunc_().long()
            lut = torch.where(added < SOLARIZE_ADD_THRESHOLD, added, 255 - added).expand(g, 3, 256)
        elif name == "Brightness":                                  # blend with black
            factor = self.v32[op, m - 1].view(g, 1, 1)
            lut = _blend(torch.zeros((), device=self.device), self.levels32.view(1, 1, 256), factor).long()
            lut = lut.expand(g, 3, 256)
        elif name == "Contrast":                                    # blend with int(mean(L) + 0.5)
            lum = _luminance(x.reshape(g, 3, PIXELS).long())
            mean = ((lum.sum(dim=2, keepdim=True) + PIXELS // 2) // PIXELS).float()   # (G, 1, 1)
            factor = self.v32[op, m - 1].view(g, 1, 1)
            lut = _blend(mean, self.levels32.view(1, 1, 256), factor).long().expand(g, 3, 256)
        elif name == "AutoContrast":                                # stretch [lo, hi] of each channel to [0, 255]
            flat = x.reshape(g, 3, PIXELS)
            lo = flat.amin(dim=2, keepdim=True).double()
            hi = flat.amax(dim=2, keepdim=True).double()
            scale = torch.full_like(lo, 255.0).div_((hi - lo).clamp(min=1))  # a true division, as Python's
            offset = -lo * scale
            stretched = (self.levels64.view(1, 1, 256) * scale + offset).trunc_().clamp_(0, 255).long()
            lut = torch.where(hi > lo, stretched, levels)
        elif name == "Equalize":
            lut = self.equalize_lut(x)
        else:
            raise ValueError(f"{name!r} is not a lookup-table op ({LUT_OPS})")
        return lut.to(torch.uint8)

    def equalize_lut(self, x: torch.Tensor) -> torch.Tensor:
        """ImageOps.equalize per channel: h = histogram, step = (Σh − h[last non-zero]) // 255, and
        lut[i] = (step // 2 + Σ_{j<i} h[j]) // step clipped to 255 (identity if step = 0 or < 2 levels)."""
        g = x.shape[0]
        flat = x.reshape(g * 3, PIXELS).long() + (torch.arange(g * 3, device=self.device) * 256).view(-1, 1)
        hist = torch.zeros(g * 3 * 256, dtype=torch.int64, device=self.device)
        hist.scatter_add_(0, flat.view(-1), torch.ones_like(flat.view(-1)))
        hist = hist.view(g, 3, 256)
        present = hist > 0
        last = 255 - present.flip(2).long().argmax(dim=2, keepdim=True)             # highest non-zero bin
        step = (PIXELS - hist.gather(2, last)) // 255
        before = hist.cumsum(2) - hist
        lut = ((step // 2 + before) // step.clamp(min=1)).clamp_(max=255)
        identity = (present.sum(dim=2, keepdim=True) <= 1) | (step == 0)
        return torch.where(identity, self.levels.view(1, 1, 256), lut)

    def image_op(self, name: str, x: torch.Tensor, m: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Color, Sharpness (float32 blends over the image) and CutoutAbs (a filled box) on ``x``."""
        g = x.shape[0]
        op = OP_INDEX[name]
        if name == "CutoutAbs":                                     # the original's inclusive PIL box
            v = self.v64[op, m - 1]
            x0 = (centres[:, 0] - v / 2).clamp(min=0).floor()
            y0 = (centres[:, 1] - v / 2).clamp(min=0).floor()
            x1 = (x0 + v).clamp(max=SIZE).floor().clamp(max=SIZE - 1)
            y1 = (y0 + v).clamp(max=SIZE).floor().clamp(max=SIZE - 1)
            c = self.coord.double()
            cols = (c.view(1, SIZE) >= x0.view(g, 1)) & (c.view(1, SIZE) <= x1.view(g, 1))
            rows = (c.view(1, SIZE) >= y0.view(g, 1)) & (c.view(1, SIZE) <= y1.view(g, 1))
            box = (rows.view(g, 1, SIZE, 1) & cols.view(g, 1, 1, SIZE))
            return torch.where(box, self.cutout_fill, x)
        factor = self.v32[op, m - 1].view(g, 1, 1, 1)
        image = x.float()
        if name == "Color":                                         # blend with the L image
            degenerate = _luminance(x.reshape(g, 3, PIXELS).long()).float().view(g, 1, SIZE, SIZE)
        elif name == "Sharpness":                                   # blend with ImageFilter.SMOOTH
            degenerate = self.smooth(image)
        else:
            raise ValueError(f"{name!r} is not one of {IMAGE_OPS}")
        return _blend(degenerate, image, factor).to(torch.uint8)

    @staticmethod
    def smooth(image: torch.Tensor) -> torch.Tensor:
        """Pillow's 3×3 SMOOTH filter ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13) on float32 (G, 3, 32, 32)
        holding integers: 0.5 + row below + row + row above, each (left·k + centre·k' + right·k),
        in float32 and in that order, truncated to 0..255; the border rows and columns are copied."""
        k1 = torch.tensor(1.0, dtype=torch.float32) / 13
        k5 = torch.tensor(5.0, dtype=torch.float32) / 13

        def row(r: slice, centre: torch.Tensor) -> torch.Tensor:
            return (image[:, :, r, :-2] * k1 + image[:, :, r, 1:-1] * centre) + image[:, :, r, 2:] * k1

        total = 0.5 + row(slice(2, None), k1)
        total = total + row(slice(1, -1), k5)
        total = total + row(slice(0, -2), k1)
        out = image.clone()
        out[:, :, 1:-1, 1:-1] = total.clamp_(0, 255).trunc_()
        return out

