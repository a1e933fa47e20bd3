"""Shapes, textures and scenes shared by the three synthetic kinds, all vectorised over pixels.

A class object is a (shape, texture) pair: a unit shape (closed loops, even-odd fill) placed with a
random size, aspect, position and rotation, filled with a two-colour texture in a random colour and
shaded; backgrounds are smooth random colour fields with low-contrast clutter blobs and pixel noise.
"""
from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np

SHAPES = ("disc", "square", "triangle", "star", "cross", "ring")
TEXTURES = ("solid", "stripes", "checker", "dots", "grid", "speckle")
Style = tuple[str, str]  # (shape, texture)


def circle(radius: float, n: int = 28) -> np.ndarray:
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
    "disc": [circle(0.95)],
    "square": [_regular(4, 1.05, np.pi / 4)],
    "triangle": [_regular(3, 1.15, np.pi / 2)],
    "star": [_star(5, 1.15, 0.48)],
    "cross": [_cross(0.34)],
    "ring": [circle(1.0), circle(0.55)],
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
