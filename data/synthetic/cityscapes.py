"""Synthetic Cityscapes (leftImg8bit + gtFine, train/val): street-like scenes with the real label ids."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from data.synthetic.common import (check_count, check_size, check_workers, encode, generate_atomically,
                                   parallel_map, sample_rng, write_bytes)
from data.synthetic.drawing import (SHAPES, Style, add_clutter, blob_loops, circle, draw_shape, finish_image,
                                    loops_bbox, paint, pixel_centres, polygon_mask, random_colour)

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
CITY_COLOUR_LUT = np.zeros((256, 4), dtype=np.uint8)
CITY_COLOUR_LUT[:, 3] = 255
for _label_id, (_name, _rgb) in CITY_LABELS.items():
    CITY_COLOUR_LUT[_label_id, :3] = _rgb


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
        unit = circle(1.0, 40)
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


def _city_job(job: tuple) -> dict[str, bytes]:
    """(seed, split, index, (h, w)) -> {file suffix: bytes} for one Cityscapes frame."""
    seed, split, index, (h, w) = job
    rng = sample_rng(seed, "cityscapes", split, index)
    first = CITY_THING_IDS[index % len(CITY_THING_IDS)]
    image, labels, instances, polygons = render_city_sample(h, w, rng, first_thing=first)
    doc = {"imgHeight": h, "imgWidth": w,
           "objects": [{"label": CITY_LABELS[label_id][0], "polygon": np.rint(loop).astype(int).tolist()}
                       for label_id, loop in polygons]}
    return {"leftImg8bit.png": encode(Image.fromarray(image, "RGB"), "PNG"),
            "gtFine_labelIds.png": encode(Image.fromarray(labels, "L"), "PNG"),
            "gtFine_color.png": encode(Image.fromarray(CITY_COLOUR_LUT[labels], "RGBA"), "PNG"),
            "gtFine_instanceIds.png": encode(Image.fromarray(instances), "PNG"),
            "gtFine_polygons.json": (json.dumps(doc, indent=4) + "\n").encode("utf-8")}



def city_entries(split: str, count: int) -> list[str]:
    """Sorted ``<city>/<city>_<seq>_000019`` entries, spread round-robin over the split's cities."""
    cities = CITY_TRAIN_CITIES if split == "train" else CITY_VAL_CITIES
    return sorted(f"{cities[i % len(cities)]}/{cities[i % len(cities)]}_{i // len(cities):06d}_000019"
                  for i in range(count))


def make_cityscapes(root: str | os.PathLike, num_train: int = 40, num_val: int = 12,
                    size: tuple[int, int] = CITY_DEFAULT_SIZE, seed: int = 0, workers: int = 1) -> Path:
    """Write a synthetic Cityscapes (leftImg8bit + gtFine, train/val) dataset; return ``root``."""
    check_count(num_train, "num_train")
    check_count(num_val, "num_val")
    check_workers(workers)
    size = (int(size[0]), int(size[1]))
    check_size(size[0], size[1], "size")
    args = {"num_train": num_train, "num_val": num_val, "size": size, "seed": seed}

    def build(staging: Path) -> None:
        for split, count in (("train", num_train), ("val", num_val)):
            entries = city_entries(split, count)
            jobs = [(seed, split, index, size) for index in range(count)]
            for entry, files in zip(entries, parallel_map(_city_job, jobs, workers)):
                city, name = entry.split("/")
                for suffix, data in files.items():
                    folder = "leftImg8bit" if suffix.startswith("leftImg8bit") else "gtFine"
                    write_bytes(staging / folder / split / city / f"{name}_{suffix}", data)

    generate_atomically(root, "cityscapes", args, ["leftImg8bit", "gtFine"], build)
    return Path(root)
