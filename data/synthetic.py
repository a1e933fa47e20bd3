"""Deterministic synthetic datasets in the exact on-disk formats of VOC 2012, Cityscapes and CIFAR-10.

Every class is a (shape, texture) pair: a disc, square, triangle, star, cross or ring filled with a
solid, striped, checked, dotted, grid or speckled texture, drawn in a random colour (any hue), size,
aspect, position and rotation on a cluttered background (smooth random colour field, low-contrast
random blobs that are not class shapes, pixel noise). Colour therefore says nothing about the class:
a model has to learn shape and texture, which makes the data learnable but not trivial.

Formats written (``<root>`` is the ``--root`` argument):

* ``voc``: ``<root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg`` (RGB, quality 90),
  ``SegmentationClassAug/<id>.png`` (palette PNG, standard VOC colormap, 0 = background,
  1-20 = classes, 255 = a band 1 px either side of every object edge, like VOC's void outlines) and
  ``ImageSets/Segmentation/{trainaug,train,val}.txt`` (sorted ``{year}_{6 digits}`` ids; ``train`` is
  a ~14 % subset of ``trainaug``, like VOC's 1,464 of 10,582).
* ``cityscapes``: ``<root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
  ``<root>/gtFine/{train,val}/<city>/<...>_gtFine_{labelIds,color,instanceIds}.png`` +
  ``_gtFine_polygons.json``; label ids are the real Cityscapes ids (the 19 evaluated classes plus
  ignored ids 0, 1, 4, 5, 6, 9, 10); a street-like layout (sky, building/wall/fence/vegetation/
  terrain segments, sidewalk, road) with the 11 "thing" classes as shape x texture objects.
  ``torchvision.datasets.Cityscapes(root, split, mode="fine", target_type=...)`` loads it.
* ``cifar10``: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``, pickles with
  the real bytes keys (``pickle.load(f, encoding="bytes")``); 32x32 images, one object each,
  class-balanced.

Determinism: image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, kind, split, i])``,
so the same arguments give byte-identical files.

Atomicity: a dataset is built in ``<root>/.tmp-synthetic-<kind>-<pid>`` and its top-level folder(s)
are renamed into ``<root>`` only when complete; then the marker ``<root>/synthetic-<kind>.json``
(arguments + generator version) is written last through :mod:`utils.io`. A rerun with the same
arguments finds the marker and returns at once; other arguments on the same root are a UserError.

CLI::

    python -m data.synthetic --kind voc|cityscapes|cifar10 --root DIR [--num-train N] [--num-val N]
        [--size H W | --size-range LO HI | --image-size S] [--classes ID ...] [--seed S] [--workers N]

For cifar10, --num-train / --num-val are images PER CLASS (train over 5 batches / test_batch).
Functions: make_voc(root, num_train, num_val, size=None, size_range=(72, 128), seed, workers),
make_cityscapes(root, num_train, num_val, size=(64, 128), seed, workers),
make_cifar10(root, num_train_per_class, num_test_per_class, seed, workers).
"""
from __future__ import annotations

import argparse
import colorsys
import errno
import io
import json
import os
import pickle
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from utils.errors import UserError, run_cli
from utils.io import TMP_MARKER, write_text_atomic

GENERATOR_VERSION = 1
KIND_CODES = {"voc": 1, "cityscapes": 2, "cifar10": 3}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "ids": 9, "order": 10}

SHAPES = ("disc", "square", "triangle", "star", "cross", "ring")
TEXTURES = ("solid", "stripes", "checker", "dots", "grid", "speckle")
Style = tuple[str, str]  # (shape, texture)

# ----------------------------------------------------------------------------------------------
# Class definitions
# ----------------------------------------------------------------------------------------------
VOC_NUM_CLASSES = 21
# VOC class c (1..20) = VOC_STYLES[c - 1]: 5 shapes x 4 textures.
VOC_STYLES: list[Style] = [(s, t) for s in SHAPES[:5] for t in TEXTURES[:4]]
VOC_DEFAULT_SIZE_RANGE = (72, 128)

CIFAR_LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck")
# CIFAR class k = CIFAR_STYLES[k]: 5 shapes x {solid, stripes}.
CIFAR_STYLES: list[Style] = [(s, t) for t in ("solid", "stripes") for s in SHAPES[:5]]
CIFAR_BATCHES = 5

# Cityscapes: (labelId, name, RGB colour) of every id this generator may write.
CITY_LABELS: dict[int, tuple[str, tuple[int, int, int]]] = {
    0: ("unlabeled", (0, 0, 0)), 1: ("ego vehicle", (0, 0, 0)), 4: ("static", (0, 0, 0)),
    5: ("dynamic", (111, 74, 0)), 6: ("ground", (81, 0, 81)), 7: ("road", (128, 64, 128)),
    8: ("sidewalk", (244, 35, 232)), 9: ("parking", (250, 170, 160)),
    10: ("rail track", (230, 150, 140)), 11: ("building", (70, 70, 70)),
    12: ("wall", (102, 102, 156)), 13: ("fence", (190, 153, 153)), 17: ("pole", (153, 153, 153)),
    19: ("traffic light", (250, 170, 30)), 20: ("traffic sign", (220, 220, 0)),
    21: ("vegetation", (107, 142, 35)), 22: ("terrain", (152, 251, 152)), 23: ("sky", (70, 130, 180)),
    24: ("person", (220, 20, 60)), 25: ("rider", (255, 0, 0)), 26: ("car", (0, 0, 142)),
    27: ("truck", (0, 0, 70)), 28: ("bus", (0, 60, 100)), 31: ("train", (0, 80, 100)),
    32: ("motorcycle", (0, 0, 230)), 33: ("bicycle", (119, 11, 32)),
}
CITY_TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITY_HAS_INSTANCES = frozenset(range(24, 34))
# Stuff in the middle band, told apart by texture (colour is random).
CITY_SEGMENT_STUFF: dict[int, str] = {11: "grid", 12: "solid", 13: "stripes", 21: "dots", 22: "speckle"}
# Things: pole, traffic light, traffic sign, person, rider, car, truck, bus, train, motorcycle, bicycle.
CITY_THING_IDS = (17, 19, 20, 24, 25, 26, 27, 28, 31, 32, 33)
CITY_THING_STYLES: dict[int, Style] = dict(zip(
    CITY_THING_IDS, [(s, t) for t in ("solid", "stripes") for s in SHAPES][:len(CITY_THING_IDS)]))
CITY_TRAIN_CITIES = ("aachen", "bochum", "bremen", "cologne")
CITY_VAL_CITIES = ("frankfurt", "lindau", "munster")
CITY_DEFAULT_SIZE = (64, 128)


def voc_palette() -> np.ndarray:
    """The standard PASCAL VOC colormap, (256, 3) uint8 (index 255 = (224, 224, 192))."""
    idx = np.arange(256)
    cmap = np.zeros((256, 3), dtype=np.int64)
    for j in range(8):  # 8 bit positions, vectorised over the 256 indices
        for ch in range(3):
            cmap[:, ch] |= ((idx >> (3 * j + ch)) & 1) << (7 - j)
    return cmap.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Drawing helpers shared by the three kinds (all vectorised over pixels)
# ----------------------------------------------------------------------------------------------
def _circle(radius: float, n: int = 28) -> np.ndarray:
    a = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def _regular(n: int, radius: float, start: float) -> np.ndarray:
    a = start + np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return radius * np.stack([np.cos(a), np.sin(a)], axis=1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    a = np.pi / 2 + np.linspace(0.0, 2 * np.pi, 2 * points, endpoint=False)
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _cross(half_width: float) -> np.ndarray:
    a = half_width
    return np.array([(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1),
                     (-a, -1), (-a, -a), (-1, -a), (-1, a), (-a, a), (-a, 1)], dtype=float)


# Unit shapes (radius ~1) as lists of closed loops, filled with the even-odd rule (ring = 2 loops).
UNIT_SHAPES: dict[str, list[np.ndarray]] = {
    "disc": [_circle(0.95)],
    "square": [_regular(4, 1.05, np.pi / 4)],
    "triangle": [_regular(3, 1.15, np.pi / 2)],
    "star": [_star(5, 1.15, 0.48)],
    "cross": [_cross(0.34)],
    "ring": [_circle(1.0), _circle(0.55)],
}


def place_loops(loops: Sequence[np.ndarray], cx: float, cy: float, radius: float, angle: float,
                aspect: float = 1.0) -> list[np.ndarray]:
    """Stretch (x by ``aspect``), rotate by ``angle``, scale by ``radius`` and move to (cx, cy)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    out = []
    for loop in loops:
        pts = loop * np.array([aspect, 1.0 / aspect])
        out.append(pts @ rot.T * radius + np.array([cx, cy]))
    return out


def loops_bbox(loops: Sequence[np.ndarray], h: int, w: int) -> tuple[slice, slice] | None:
    """Pixel rows/cols whose centres may lie inside the loops, clipped to the image; None if empty."""
    pts = np.concatenate(loops)
    x0, y0 = np.floor(pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def pixel_centres(region: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    """(ys (h, 1), xs (1, w)) image coordinates of the pixel centres of ``region``."""
    ys = np.arange(region[0].start, region[0].stop, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(region[1].start, region[1].stop, dtype=np.float32)[None, :] + 0.5
    return ys, xs


def polygon_mask(loops: Sequence[np.ndarray], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Even-odd fill of closed loops at the given pixel centres, vectorised over rows x edges x cols."""
    start = np.concatenate(loops)
    end = np.concatenate([np.roll(loop, -1, axis=0) for loop in loops])
    keep = start[:, 1] != end[:, 1]  # horizontal edges never cross a scanline
    (x0, y0), (x1, y1) = start[keep].T, end[keep].T
    crosses = (y0 > ys) != (y1 > ys)  # (h, E): edge spans the row's centre line
    x_at = x0 + (ys - y0) * ((x1 - x0) / (y1 - y0))  # (h, E): where it crosses
    x_at = np.where(crosses, x_at, -np.inf)
    count = (xs[:, :, None] < x_at[:, None, :]).sum(axis=2)  # crossings right of each pixel
    return (count % 2).astype(bool)


def random_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.25, 1.0),
                  val: tuple[float, float] = (0.3, 1.0)) -> np.ndarray:
    """A colour of any hue, RGB in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val)))


def contrast_colour(colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A clearly darker (for light colours) or lighter (for dark ones) partner colour."""
    if colour.mean() > 0.5:
        return colour * rng.uniform(0.2, 0.5)
    return colour + (1.0 - colour) * rng.uniform(0.45, 0.75)


def texture_pattern(texture: str, ys: np.ndarray, xs: np.ndarray, period: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Mixing weight in [0, 1] between the two colours of a texture, in image coordinates.

    ``period`` is the repeat length in pixels; orientation and phase are random, so every texture
    is rotation invariant as a class (horizontal and vertical stripes are the same texture).
    """
    theta = rng.uniform(0.0, np.pi)
    ph_u, ph_v = rng.uniform(0.0, period, size=2)
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = xs * c + ys * s + np.float32(ph_u)
    v = ys * c - xs * s + np.float32(ph_v)
    shape = (ys.shape[0], xs.shape[1])
    if texture == "solid":
        return np.zeros(shape, dtype=np.float32)
    if texture == "stripes":
        return ((u % period) < period / 2).astype(np.float32)
    if texture == "checker":
        cell = period / 2
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    du, dv = u % period - period / 2, v % period - period / 2
    if texture == "dots":
        return (du * du + dv * dv < (0.3 * period) ** 2).astype(np.float32)
    if texture == "grid":
        return ((np.abs(du) > 0.36 * period) | (np.abs(dv) > 0.36 * period)).astype(np.float32)
    if texture == "speckle":
        return 0.5 * rng.random(shape, dtype=np.float32)
    raise ValueError(f"unknown texture {texture!r}")


def paint(image: np.ndarray, region: tuple[slice, slice], mask: np.ndarray | None, texture: str,
          rng: np.random.Generator, period: float, colour: np.ndarray | None = None,
          alpha: float = 1.0, shading: float = 0.2) -> None:
    """Fill ``mask`` (or the whole ``region``) of the float RGB ``image`` with a shaded texture."""
    ys, xs = pixel_centres(region)
    c1 = (random_colour(rng) if colour is None else colour).astype(np.float32)
    c2 = contrast_colour(c1, rng).astype(np.float32)
    weight = texture_pattern(texture, ys, xs, period, rng)[..., None]
    beta = rng.uniform(0.0, 2 * np.pi)
    gain = np.float32(2 * rng.uniform(-shading, shading) / max(ys.shape[0], xs.shape[1]))
    cy, cx = 0.5 * (region[0].start + region[0].stop), 0.5 * (region[1].start + region[1].stop)
    ramp = (xs - np.float32(cx)) * np.float32(np.cos(beta)) + (ys - np.float32(cy)) * np.float32(np.sin(beta))
    light = (1.0 + gain * ramp)[..., None]
    layer = (c1 + (c2 - c1) * weight) * light
    target = image[region]
    if alpha < 1.0:
        layer = target + (layer - target) * np.float32(alpha)
    np.copyto(target, layer, where=True if mask is None else mask[..., None])


def draw_shape(image: np.ndarray, style: Style, cx: float, cy: float, radius: float,
               rng: np.random.Generator, period: float | None = None
               ) -> tuple[tuple[slice, slice], np.ndarray, list[np.ndarray]] | None:
    """Draw one class object; return (region, mask within region, placed loops) or None if off-image."""
    shape, texture = style
    loops = place_loops(UNIT_SHAPES[shape], cx, cy, radius, rng.uniform(0.0, 2 * np.pi),
                        aspect=float(np.exp(rng.uniform(-0.15, 0.15))))
    region = loops_bbox(loops, image.shape[0], image.shape[1])
    if region is None:
        return None
    mask = polygon_mask(loops, *pixel_centres(region))
    if not mask.any():
        return None
    if period is None:
        period = float(np.clip(radius * rng.uniform(0.3, 0.45), 3.0, 10.0))
    paint(image, region, mask, texture, rng, period)
    return region, mask, loops


def blob_loops(cx: float, cy: float, radius: float, rng: np.random.Generator) -> list[np.ndarray]:
    """An irregular, potato-like polygon (not one of the class shapes)."""
    n = int(rng.integers(9, 15))
    a = np.sort(rng.uniform(0.0, 2 * np.pi, n))
    r = radius * rng.uniform(0.65, 1.0, n)
    return [np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)]


def smooth_background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour field (bilinear upsampling of a coarse random grid), float RGB."""
    gh, gw = (int(v) for v in rng.integers(2, 6, size=2))
    base = random_colour(rng, sat=(0.0, 0.7), val=(0.25, 0.9))
    grid = np.clip(base + rng.normal(0.0, 0.18, size=(gh, gw, 3)), 0.0, 1.0)
    grid = grid.astype(np.float32)
    fy = np.linspace(0.0, gh - 1, h, dtype=np.float32)
    fx = np.linspace(0.0, gw - 1, w, dtype=np.float32)
    y0 = np.minimum(fy.astype(int), gh - 2)
    x0 = np.minimum(fx.astype(int), gw - 2)
    wx = (fx - x0)[None, :, None]
    rows = grid[:, x0] * (1 - wx) + grid[:, x0 + 1] * wx  # (gh, w, 3): interpolate along x first
    wy = (fy - y0)[:, None, None]
    return rows[y0] * (1 - wy) + rows[y0 + 1] * wy


def add_clutter(image: np.ndarray, rng: np.random.Generator, count: int,
                radius_range: tuple[float, float]) -> None:
    """Low-contrast random blobs of random colours (some faintly textured) — never labelled."""
    h, w = image.shape[:2]
    for _ in range(count):
        loops = blob_loops(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(*radius_range), rng)
        region = loops_bbox(loops, h, w)
        if region is None:
            continue
        mask = polygon_mask(loops, *pixel_centres(region))
        textured = rng.random() < 0.4
        texture = str(rng.choice(["stripes", "checker", "dots"])) if textured else "solid"
        paint(image, region, mask, texture, rng, period=rng.uniform(3.0, 8.0),
              alpha=rng.uniform(0.12, 0.25) if textured else rng.uniform(0.15, 0.4))


def finish_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add pixel noise and quantise the float image to uint8 RGB."""
    sigma = np.float32(rng.uniform(0.01, 0.04) * 255.0)
    noisy = image * np.float32(255.0) + rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def boundary_band(instances: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels within ``width`` px (Chebyshev) of a pixel with a different instance value."""
    h, w = instances.shape
    padded = np.pad(instances, width, mode="edge")
    band = np.zeros((h, w), dtype=bool)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy or dx:
                band |= padded[width + dy:width + dy + h, width + dx:width + dx + w] != instances
    return band


def sample_rng(seed: int, kind: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, KIND_CODES[kind], SPLIT_CODES[split], index])


# ----------------------------------------------------------------------------------------------
# Per-kind sample renderers
# ----------------------------------------------------------------------------------------------
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


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=float)


def render_city_sample(h: int, w: int, rng: np.random.Generator, first_thing: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]]:
    """One street-like scene: (image uint8 RGB, labelIds uint8, instanceIds uint16, polygons).

    Layout, top to bottom: sky; vertical segments of building/wall/fence/vegetation/terrain (1-px
    'unlabeled' gaps between them); sidewalk; road (with optional parking / rail-track patches);
    then 2-6 thing objects (shape x texture), optional static/dynamic blobs and an ego-vehicle hood.
    ``polygons`` is [(labelId, outer loop)] in drawing order (later ones on top), as in Cityscapes.
    """
    image = np.zeros((h, w, 3), dtype=np.float32)
    labels = np.zeros((h, w), dtype=np.uint8)
    instances = np.zeros((h, w), dtype=np.int32)
    polygons: list[tuple[int, np.ndarray]] = []

    def fill_rect(label_id: int, texture: str, x0: int, y0: int, x1: int, y1: int,
                  period: float, shading: float = 0.2) -> None:
        if x1 <= x0 or y1 <= y0:
            return
        region = (slice(y0, y1), slice(x0, x1))
        paint(image, region, None, texture, rng, period, shading=shading)
        labels[region] = label_id
        instances[region] = label_id
        polygons.append((label_id, _rect(x0, y0, x1, y1)))

    def fill_loops(label_id: int, loops: list[np.ndarray], texture: str, period: float) -> None:
        region = loops_bbox(loops, h, w)
        if region is None:
            return
        mask = polygon_mask(loops, *pixel_centres(region))
        paint(image, region, mask, texture, rng, period)
        labels[region][mask] = label_id
        instances[region][mask] = label_id
        polygons.append((label_id, loops[0]))

    base_period = max(3.0, h / 16)
    horizon = int(rng.uniform(0.5, 0.62) * h)
    road_top = min(h - 1, horizon + max(2, int(rng.uniform(0.06, 0.14) * h)))
    fill_rect(23, "solid", 0, 0, w, horizon, base_period, shading=0.5)  # sky
    x = 0
    while x < w:
        seg_w = max(4, int(rng.uniform(0.12, 0.35) * w))
        label_id = int(rng.choice(list(CITY_SEGMENT_STUFF)))
        top_frac = (0.3, 0.5) if label_id == 22 else (0.06, 0.4)
        top = int(rng.uniform(*top_frac) * h)
        fill_rect(label_id, CITY_SEGMENT_STUFF[label_id], x, top, min(x + seg_w, w), horizon,
                  base_period * rng.uniform(0.8, 1.6))
        x += seg_w
        if x < w:
            gap = (slice(min(top, horizon), horizon), x - 1)  # 1-px 'unlabeled' gap between segments
            labels[gap] = 0
            instances[gap] = 0
    fill_rect(8, "checker", 0, horizon, w, road_top, base_period)  # sidewalk
    fill_rect(7, "speckle", 0, road_top, w, h, base_period)  # road
    if rng.random() < 0.3:  # ground patch on the sidewalk
        gx = int(rng.uniform(0, 0.8) * w)
        fill_rect(6, "solid", gx, horizon, gx + max(3, int(0.15 * w)), road_top, base_period)
    if rng.random() < 0.3:  # parking (or, rarely, rail track) patch on the road
        label_id = 10 if rng.random() < 0.3 else 9
        px, py = int(rng.uniform(0, 0.8) * w), int(rng.uniform(road_top, h - 2))
        fill_rect(label_id, "stripes" if label_id == 10 else "solid", px, py,
                  px + max(4, int(0.2 * w)), min(h, py + max(2, int(0.1 * h))), base_period)
    for _ in range(int(rng.integers(0, 3))):  # ignored static/dynamic objects
        fill_loops(int(rng.choice([4, 5])), blob_loops(rng.uniform(0, w), rng.uniform(0.3, 0.9) * h,
                                                       rng.uniform(0.05, 0.12) * h, rng),
                   "solid", base_period)
    add_clutter(image, rng, int(rng.integers(2, 6)), (0.05 * h, 0.25 * h))
    n_things = int(rng.integers(2, 7))
    things = [int(t) for t in rng.choice(CITY_THING_IDS, n_things)]
    if first_thing is not None:
        things[-1] = first_thing
    counters: dict[int, int] = {}
    for label_id in things:
        radius = rng.uniform(0.08, 0.2) * h
        cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.3, 0.88) * h
        drawn = draw_shape(image, CITY_THING_STYLES[label_id], cx, cy, radius, rng)
        if drawn is None:
            continue
        region, mask, loops = drawn
        labels[region][mask] = label_id
        if label_id in CITY_HAS_INSTANCES:
            instances[region][mask] = label_id * 1000 + counters.get(label_id, 0)
            counters[label_id] = counters.get(label_id, 0) + 1
        else:
            instances[region][mask] = label_id
        polygons.append((label_id, loops[0]))
    if rng.random() < 0.5:  # ego-vehicle hood along the bottom edge
        unit = _circle(1.0, 40)
        hood = [np.stack([w / 2 + unit[:, 0] * rng.uniform(0.6, 0.8) * w,
                          h + unit[:, 1] * rng.uniform(0.06, 0.14) * h], axis=1)]
        region = loops_bbox(hood, h, w)
        if region is not None:
            mask = polygon_mask(hood, *pixel_centres(region))
            paint(image, region, mask, "solid", rng, base_period,
                  colour=random_colour(rng, val=(0.05, 0.3)))
            labels[region][mask] = 1
            instances[region][mask] = 1
            polygons.append((1, hood[0]))
    return finish_image(image, rng), labels, instances.astype(np.uint16), polygons


# ----------------------------------------------------------------------------------------------
# Writing: staging folder, marker file, encoders
# ----------------------------------------------------------------------------------------------
def _write_bytes(path: Path, data: bytes) -> None:
    """Plain write inside the staging folder (the staging folder is the atomic unit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_bytes(data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{path}: no space left on device while writing; free disk space and rerun") from exc
        raise


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    _write_bytes(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))


def marker_path(root: str | os.PathLike, kind: str) -> Path:
    return Path(root) / f"synthetic-{kind}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _generate(root: str | os.PathLike, kind: str, args: dict, top_names: Sequence[str],
              build: Callable[[Path], None]) -> bool:
    """Build a dataset atomically; return False (doing nothing) if it is already complete."""
    root = Path(root)
    marker = marker_path(root, kind)
    record = json.loads(json.dumps({"kind": kind, "generator_version": GENERATOR_VERSION, "args": args}))
    if marker.is_file():
        try:
            existing = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{marker}: unreadable marker ({exc}); delete it and the dataset folders, then rerun") from exc
        if existing == record:
            return False
        raise UserError(f"{marker}: this root already holds a synthetic {kind} dataset made with "
                        f"{existing.get('args')}, not {record['args']}; use another --root or delete it")
    for name in top_names:
        if (root / name).exists():
            raise UserError(f"{root / name}: exists but is not a complete synthetic {kind} dataset "
                            f"(no {marker.name}); delete it or use another --root")
    root.mkdir(parents=True, exist_ok=True)
    prefix = f"{TMP_MARKER}synthetic-{kind}-"
    for stale in root.glob(prefix + "*"):
        pid = stale.name[len(prefix):]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = root / f"{prefix}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        build(staging)
        for name in top_names:
            os.replace(staging / name, root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_text_atomic(marker, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return True


def _check_count(value: int, name: str, minimum: int = 1) -> None:
    if int(value) != value or value < minimum:
        raise UserError(f"{name}={value}: must be an integer >= {minimum}; pass a larger value")


def _check_workers(workers: int) -> None:
    if int(workers) != workers or workers < 1:
        raise UserError(f"workers={workers}: must be an integer >= 1; pass --workers 1 or more")


def _check_size(h: int, w: int, what: str) -> None:
    if h < 16 or w < 16:
        raise UserError(f"{what}={h}x{w}: images must be at least 16x16; pass a larger size")


# ----------------------------------------------------------------------------------------------
# Per-image jobs (top-level so that a process pool can run them; results are encoded files)
# ----------------------------------------------------------------------------------------------
def parallel_map(fn: Callable, jobs: Sequence, workers: int) -> Iterator:
    """``map(fn, jobs)`` in order, in ``workers`` processes when > 1 (same output either way)."""
    if workers <= 1 or len(jobs) < 64:
        yield from map(fn, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers))))


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
    return _encode(Image.fromarray(image, "RGB"), "JPEG", quality=90), _encode(png, "PNG")


def _city_job(job: tuple) -> dict[str, bytes]:
    """(seed, split, index, (h, w)) -> {file suffix: bytes} for one Cityscapes frame."""
    seed, split, index, (h, w) = job
    rng = sample_rng(seed, "cityscapes", split, index)
    first = CITY_THING_IDS[index % len(CITY_THING_IDS)]
    image, labels, instances, polygons = render_city_sample(h, w, rng, first_thing=first)
    doc = {"imgHeight": h, "imgWidth": w,
           "objects": [{"label": CITY_LABELS[label_id][0], "polygon": np.rint(loop).astype(int).tolist()}
                       for label_id, loop in polygons]}
    return {"leftImg8bit.png": _encode(Image.fromarray(image, "RGB"), "PNG"),
            "gtFine_labelIds.png": _encode(Image.fromarray(labels, "L"), "PNG"),
            "gtFine_color.png": _encode(Image.fromarray(CITY_COLOUR_LUT[labels], "RGBA"), "PNG"),
            "gtFine_instanceIds.png": _encode(Image.fromarray(instances), "PNG"),
            "gtFine_polygons.json": (json.dumps(doc, indent=4) + "\n").encode("utf-8")}


def _cifar_job(job: tuple) -> np.ndarray:
    """(seed, split, index, class) -> one CIFAR row: 1024 R, then 1024 G, then 1024 B values."""
    seed, split, index, cls = job
    image = render_cifar_sample(cls, sample_rng(seed, "cifar10", split, index))
    return image.transpose(2, 0, 1).reshape(-1)


VOC_PALETTE = voc_palette()
CITY_COLOUR_LUT = np.zeros((256, 4), dtype=np.uint8)
CITY_COLOUR_LUT[:, 3] = 255
for _label_id, (_name, _rgb) in CITY_LABELS.items():
    CITY_COLOUR_LUT[_label_id, :3] = _rgb


# ----------------------------------------------------------------------------------------------
# Public generators
# ----------------------------------------------------------------------------------------------
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
    _check_count(num_train, "num_train")
    _check_count(num_val, "num_val")
    _check_workers(workers)
    if size is not None:
        size = (int(size[0]), int(size[1]))
        _check_size(size[0], size[1], "size")
    else:
        lo, hi = (int(v) for v in size_range)
        _check_size(lo, lo, "size_range")
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
                _write_bytes(base / "JPEGImages" / f"{image_id}.jpg", jpeg)
                _write_bytes(base / "SegmentationClassAug" / f"{image_id}.png", png)
        lists = base / "ImageSets" / "Segmentation"
        _write_lines(lists / "trainaug.txt", trainaug)
        _write_lines(lists / "train.txt", train)
        _write_lines(lists / "val.txt", val)

    _generate(root, "voc", args, ["VOCdevkit"], build)
    return Path(root) / "VOCdevkit" / "VOC2012"


def city_entries(split: str, count: int) -> list[str]:
    """Sorted ``<city>/<city>_<seq>_000019`` entries, spread round-robin over the split's cities."""
    cities = CITY_TRAIN_CITIES if split == "train" else CITY_VAL_CITIES
    return sorted(f"{cities[i % len(cities)]}/{cities[i % len(cities)]}_{i // len(cities):06d}_000019"
                  for i in range(count))


def make_cityscapes(root: str | os.PathLike, num_train: int = 40, num_val: int = 12,
                    size: tuple[int, int] = CITY_DEFAULT_SIZE, seed: int = 0, workers: int = 1) -> Path:
    """Write a synthetic Cityscapes (leftImg8bit + gtFine, train/val) dataset; return ``root``."""
    _check_count(num_train, "num_train")
    _check_count(num_val, "num_val")
    _check_workers(workers)
    size = (int(size[0]), int(size[1]))
    _check_size(size[0], size[1], "size")
    args = {"num_train": num_train, "num_val": num_val, "size": size, "seed": seed}

    def build(staging: Path) -> None:
        for split, count in (("train", num_train), ("val", num_val)):
            entries = city_entries(split, count)
            jobs = [(seed, split, index, size) for index in range(count)]
            for entry, files in zip(entries, parallel_map(_city_job, jobs, workers)):
                city, name = entry.split("/")
                for suffix, data in files.items():
                    folder = "leftImg8bit" if suffix.startswith("leftImg8bit") else "gtFine"
                    _write_bytes(staging / folder / split / city / f"{name}_{suffix}", data)

    _generate(root, "cityscapes", args, ["leftImg8bit", "gtFine"], build)
    return Path(root)


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
    _check_count(num_train_per_class, "num_train_per_class")
    _check_count(num_test_per_class, "num_test_per_class")
    _check_workers(workers)
    args = {"num_train_per_class": num_train_per_class, "num_test_per_class": num_test_per_class,
            "seed": seed}

    def build(staging: Path) -> None:
        out = staging / "cifar-10-batches-py"
        labels, data = _cifar_split(seed, "train", num_train_per_class, workers)
        bounds = np.linspace(0, len(labels), CIFAR_BATCHES + 1).astype(int)
        for b in range(CIFAR_BATCHES):
            lo, hi = bounds[b], bounds[b + 1]
            batch = _cifar_batch(f"training batch {b + 1} of {CIFAR_BATCHES}", labels[lo:hi], data[lo:hi], lo)
            _write_bytes(out / f"data_batch_{b + 1}", pickle.dumps(batch, protocol=2))
        labels, data = _cifar_split(seed, "test", num_test_per_class, workers)
        test = _cifar_batch("testing batch 1 of 1", labels, data, 0)
        _write_bytes(out / "test_batch", pickle.dumps(test, protocol=2))
        meta = {b"num_cases_per_batch": int(bounds[1] - bounds[0]),
                b"label_names": [n.encode("ascii") for n in CIFAR_LABEL_NAMES], b"num_vis": 3072}
        _write_bytes(out / "batches.meta", pickle.dumps(meta, protocol=2))

    _generate(root, "cifar10", args, ["cifar-10-batches-py"], build)
    return Path(root) / "cifar-10-batches-py"


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m data.synthetic",
        description="Write a small deterministic synthetic dataset in the official on-disk format.")
    parser.add_argument("--kind", required=True, choices=sorted(KIND_CODES))
    parser.add_argument("--root", required=True, help="folder to write into (created if missing)")
    parser.add_argument("--num-train", type=int, default=None,
                        help="training images (cifar10: per class); default voc 200, cityscapes 40, cifar10 100")
    parser.add_argument("--num-val", type=int, default=None,
                        help="val images (cifar10: test images per class); default voc 50, cityscapes 12, cifar10 20")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                       help="fixed image size (voc, cityscapes; cityscapes default 64 128)")
    sizes.add_argument("--size-range", type=int, nargs=2, metavar=("LO", "HI"),
                       help="voc only: h and w drawn uniformly from LO..HI (default 72 128)")
    sizes.add_argument("--image-size", type=int, metavar="S",
                       help="shorthand: voc S x S, cityscapes S x 2S")
    parser.add_argument("--classes", type=int, nargs="+", default=None, metavar="ID",
                        help="voc only: draw objects of these classes (1..20) only (default all; fewer make an easier set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1,
                        help="render in this many processes (same output); default 1")
    args = parser.parse_args(argv)

    counts = {k: v for k, v in (("num_train", args.num_train), ("num_val", args.num_val)) if v is not None}
    common = {"seed": args.seed, "workers": args.workers}
    if args.kind == "cifar10":
        if args.size or args.size_range or args.image_size:
            raise UserError(f"{args.root}: CIFAR-10 images are always 32x32; drop --size/--size-range/--image-size")
        path = make_cifar10(args.root, num_train_per_class=counts.get("num_train", 100),
                            num_test_per_class=counts.get("num_val", 20), **common)
    elif args.kind == "voc":
        size = tuple(args.size) if args.size else (
            (args.image_size, args.image_size) if args.image_size else None)
        path = make_voc(args.root, size=size, size_range=tuple(args.size_range or VOC_DEFAULT_SIZE_RANGE),
                        classes=args.classes, **counts, **common)
    else:
        if args.size_range:
            raise UserError(f"{args.root}: --size-range is for voc only; use --size H W for cityscapes")
        size = tuple(args.size) if args.size else (
            (args.image_size, 2 * args.image_size) if args.image_size else CITY_DEFAULT_SIZE)
        path = make_cityscapes(args.root, size=size, **counts, **common)
    print(f"synthetic {args.kind} dataset ready at {path}", flush=True)
    return path


if __name__ == "__main__":
    sys.exit(run_cli(main))
