"""CIFAR-10 augmentation (docs/method.md §6.2): RandomRandAugment magnitudes and op effects, transforms, Cutout.

Each op's effect is checked against a formula written here on a small hand-made image (numpy
resampling for the geometric ops, lookup formulas for the colour ops), or where a formula would only
restate PIL (Equalize, Sharpness borders), against the PIL call the original made.
"""
from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps
from torchvision.transforms import v2

from classification import augment
from classification.augment import RANDAUGMENT_OPS, RandomRandAugment, op_magnitude, randaugment_op
from utils.trainer import SeededDataset

# v at m = 1, 5, 10, computed by hand from docs/method.md §6.2's (min, max): v = (m/10)(max - min) + min.
EXPECTED_V = {
    "AutoContrast": (0.1, 0.5, 1.0), "Equalize": (0.1, 0.5, 1.0), "Invert": (0.1, 0.5, 1.0),
    "Rotate": (3, 15, 30), "Posterize": (0.4, 2, 4), "Solarize": (25.6, 128, 256),
    "SolarizeAdd": (11, 55, 110), "Color": (0.28, 1.0, 1.9), "Contrast": (0.28, 1.0, 1.9),
    "Brightness": (0.28, 1.0, 1.9), "Sharpness": (0.28, 1.0, 1.9), "ShearX": (0.03, 0.15, 0.3),
    "ShearY": (0.03, 0.15, 0.3), "CutoutAbs": (4, 20, 40), "TranslateXabs": (10, 50, 100),
    "TranslateYabs": (10, 50, 100),
}
MS = (1, 5, 10)


def pattern(size: int = 32) -> np.ndarray:
    """Every value 0..255 in every channel, all pixels distinct: [y, x, c] = (32y + x + 85c) % 256."""
    y, x, c = np.meshgrid(np.arange(size), np.arange(size), np.arange(3), indexing="ij")
    return ((32 * y + x + 85 * c) % 256).astype(np.uint8)


def apply(name: str, array: np.ndarray, v: float, seed: int = 0) -> np.ndarray:
    random.seed(seed)
    return np.array(randaugment_op(name, Image.fromarray(array), v))


def sign_of(seed: int) -> int:
    """The sign the op draws after random.seed(seed): negative when random.random() > 0.5."""
    random.seed(seed)
    return -1 if random.random() > 0.5 else 1


SEED_POSITIVE = next(s for s in range(100) if sign_of(s) == 1)
SEED_NEGATIVE = next(s for s in range(100) if sign_of(s) == -1)


def test_op_list_and_magnitudes_at_m_1_5_10():
    assert [name for name, _, _ in RANDAUGMENT_OPS] == list(EXPECTED_V)  # 16 ops, the library's order
    for name, values in EXPECTED_V.items():
        for m, v in zip(MS, values):
            assert op_magnitude(name, m) == pytest.approx(v, abs=1e-12), (name, m)
    assert [augment.posterize_bits(op_magnitude("Posterize", m)) for m in range(1, 11)] == \
           [1, 1, 1, 1, 2, 2, 2, 3, 3, 4]


@pytest.mark.parametrize("m", MS)
def test_value_free_ops(m):
    arr = pattern()
    v = op_magnitude("Invert", m)
    assert np.array_equal(apply("Invert", arr, v), 255 - arr)
    grey = np.repeat(np.linspace(50, 150, 64).astype(np.uint8).reshape(8, 8, 1), 3, axis=2)
    lo, hi = 50, 150  # autocontrast stretches lo..hi to 0..255: int(x * scale - lo * scale)
    expected = np.clip(np.floor((grey.astype(float) - lo) * 255 / (hi - lo)), 0, 255)
    assert np.abs(apply("AutoContrast", grey, v) - expected).max() <= 1
    assert np.array_equal(apply("Equalize", arr, v), np.array(ImageOps.equalize(Image.fromarray(arr))))


@pytest.mark.parametrize("m", MS)
def test_solarize_posterize_solarize_add(m):
    arr = pattern()
    x = arr.astype(np.int64)
    t = op_magnitude("Solarize", m)  # 25.6, 128, 256: pixels >= t are inverted
    assert np.array_equal(apply("Solarize", arr, t), np.where(x >= t, 255 - x, x))
    bits = {1: 1, 5: 2, 10: 4}[m]
    assert np.array_equal(apply("Posterize", arr, op_magnitude("Posterize", m)), x & (0xFF << (8 - bits)) & 0xFF)
    add = {1: 11, 5: 55, 10: 110}[m]
    y = np.minimum(x + add, 255)
    assert np.array_equal(apply("SolarizeAdd", arr, op_magnitude("SolarizeAdd", m)), np.where(y >= 128, 255 - y, y))


@pytest.mark.parametrize("m", MS)
def test_enhance_ops(m):
    v = op_magnitude("Brightness", m)
    arr = pattern()
    assert np.abs(apply("Brightness", arr, v) - np.clip(arr * v, 0, 255)).max() <= 1
    grey = np.repeat(np.arange(40, 200, 10, dtype=np.uint8).reshape(4, 4, 1), 3, axis=2)
    mean = int(grey[..., 0].mean() + 0.5)
    assert np.abs(apply("Contrast", grey, v) - np.clip(mean + v * (grey - float(mean)), 0, 255)).max() <= 1
    rgb = arr.astype(float)
    lum = (299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]) / 1000
    expected = np.clip(lum[..., None] + v * (rgb - lum[..., None]), 0, 255)
    assert np.abs(apply("Color", arr, v) - expected).max() <= 2
    # Sharpness: blend with the 3x3 smoothing [[1,1,1],[1,5,1],[1,1,1]]/13; one bright pixel of 130
    dot = np.zeros((7, 7, 3), np.uint8)
    dot[3, 3] = 130
    out = apply("Sharpness", dot, v).astype(float)
    assert abs(out[3, 3, 0] - np.clip(50 + v * 80, 0, 255)) <= 1  # smooth(centre) = 5 * 130 / 13 = 50
    assert abs(out[2, 3, 0] - np.clip(10 - v * 10, 0, 255)) <= 1  # smooth(neighbour) = 130 / 13 = 10
    assert np.all(out[0] == 0) and np.all(out[:, 0] == 0)


def nearest_resample(arr: np.ndarray, source_x: np.ndarray, source_y: np.ndarray) -> np.ndarray:
    """out[y, x] = arr[floor(source_y), floor(source_x)], black where the source is outside."""
    ix, iy = np.floor(source_x).astype(int), np.floor(source_y).astype(int)
    inside = (ix >= 0) & (ix < arr.shape[1]) & (iy >= 0) & (iy < arr.shape[0])
    out = np.zeros_like(arr)
    out[inside] = arr[iy[inside], ix[inside]]
    return out


def pixel_centres(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    return x, y


@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("seed,sign", [(SEED_POSITIVE, 1), (SEED_NEGATIVE, -1)])
def test_geometric_ops(m, seed, sign):
    arr = pattern()
    x, y = pixel_centres()
    degrees = sign * EXPECTED_V["Rotate"][MS.index(m)]  # counter-clockwise about (16, 16)
    t = math.radians(degrees)
    expected = nearest_resample(arr, math.cos(t) * (x - 16) - math.sin(t) * (y - 16) + 16,
                                math.sin(t) * (x - 16) + math.cos(t) * (y - 16) + 16)
    assert np.array_equal(apply("Rotate", arr, op_magnitude("Rotate", m), seed), expected)
    s = sign * EXPECTED_V["ShearX"][MS.index(m)]  # about the top-left corner
    assert np.array_equal(apply("ShearX", arr, op_magnitude("ShearX", m), seed), nearest_resample(arr, x + s * y, y))
    assert np.array_equal(apply("ShearY", arr, op_magnitude("ShearY", m), seed), nearest_resample(arr, x, y + s * x))
    d = sign * EXPECTED_V["TranslateXabs"][MS.index(m)]
    shifted_x = np.zeros_like(arr)  # out[:, c] = in[:, c + d]
    if abs(d) < 32:
        if d > 0:
            shifted_x[:, :32 - d] = arr[:, d:]
        else:
            shifted_x[:, -d:] = arr[:, :32 + d]
    assert np.array_equal(apply("TranslateXabs", arr, op_magnitude("TranslateXabs", m), seed), shifted_x)
    shifted_y = np.swapaxes(shifted_x, 0, 1)
    assert np.array_equal(apply("TranslateYabs", np.ascontiguousarray(np.swapaxes(arr, 0, 1)),
                                op_magnitude("TranslateYabs", m), seed), shifted_y)
    if m >= 4:
        assert not shifted_x.any()  # docs/method.md §6.2: the whole 32-px image leaves the frame


def test_random_sign_is_fair():
    random.seed(3)
    out = [randaugment_op("TranslateXabs", Image.fromarray(pattern()), 10) for _ in range(400)]
    left = sum(np.array(o)[0, 0, 0] == pattern()[0, 10, 0] for o in out)
    assert 150 < left < 250


@pytest.mark.parametrize("m", MS)
def test_cutout_abs(m):
    v = op_magnitude("CutoutAbs", m)
    arr = np.zeros((32, 32, 3), np.uint8)
    sizes = Counter()
    for seed in range(60):
        random.seed(seed)
        cx, cy = random.uniform(0, 32), random.uniform(0, 32)
        out = apply("CutoutAbs", arr, v, seed)
        filled = np.all(out == (125, 123, 114), axis=2)
        assert np.array_equal(filled, np.any(out != 0, axis=2))  # nothing else changed
        ys, xs = np.nonzero(filled)
        x0, y0 = int(max(0, cx - v / 2)), int(max(0, cy - v / 2))  # the original's PIL rectangle
        assert (xs.min(), ys.min()) == (x0, y0)
        assert (xs.max(), ys.max()) == (min(31, x0 + int(v)), min(31, y0 + int(v)))
        assert filled.sum() == (xs.max() - x0 + 1) * (ys.max() - y0 + 1)
        sizes[xs.max() - x0 + 1] += 1
        reference = Image.fromarray(arr)  # the original drew this with PIL's inclusive rectangle
        ImageDraw.Draw(reference).rectangle((x0, y0, min(32, x0 + v), min(32, y0 + v)), (125, 123, 114))
        assert np.array_equal(out, np.array(reference))
    assert max(sizes) == min(32, int(v) + 1)  # unclipped: v + 1 px (inclusive ends)


def test_draw_uses_replacement_and_uniform_m():
    rra = RandomRandAugment(n=2, m_max=3)
    random.seed(0)
    draws = [rra.draw() for _ in range(3000)]
    assert {m for _, m in draws} == {1, 2, 3}
    assert all(500 < c < 1500 for c in Counter(m for _, m in draws).values())
    counts = Counter(name for names, _ in draws for name in names)
    assert set(counts) == set(EXPECTED_V) and all(250 < c < 500 for c in counts.values())  # 6000 / 16 = 375
    repeats = sum(names[0] == names[1] for names, _ in draws)  # with replacement: about 3000 / 16
    assert 120 < repeats < 270
    # same Python-random calls as the original: choices(ops, k=n), then randint(1, m_max)
    random.seed(42)
    ops = random.choices(RANDAUGMENT_OPS, k=2)
    m = random.randint(1, 3)
    random.seed(42)
    assert rra.draw() == ([ops[0][0], ops[1][0]], m)


OP_LO = {name: lo for name, lo, _ in RANDAUGMENT_OPS}
OP_HI = {name: hi for name, _, hi in RANDAUGMENT_OPS}


def test_call_applies_drawn_ops_with_their_magnitude(monkeypatch):
    applied = []
    monkeypatch.setattr(augment, "randaugment_op", lambda name, image, v: applied.append((name, v)) or image)
    rra = RandomRandAugment(n=3, m_max=10)
    for seed in range(20):
        random.seed(seed)
        names, m = rra.draw()
        applied.clear()
        random.seed(seed)
        rra(Image.fromarray(pattern(8)))
        assert applied == [(name, (m / 10) * (OP_HI[name] - OP_LO[name]) + OP_LO[name]) for name in names]


def normalised(arr: np.ndarray) -> torch.Tensor:
    mean = torch.tensor([0.49137, 0.48235, 0.44667]).view(3, 1, 1)
    std = torch.tensor([0.24706, 0.24353, 0.26157]).view(3, 1, 1)
    return (torch.from_numpy(arr).permute(2, 0, 1).float() / 255 - mean) / std


def test_eval_transform():
    arr = pattern()
    out = augment.eval_transform()(Image.fromarray(arr))
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    assert torch.allclose(out, normalised(arr), atol=1e-6)


class ImageList(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self.transform(Image.fromarray(np.roll(pattern(), index, axis=1)))


@pytest.mark.parametrize("autoaugment", [False, True])
def test_train_transform_structure_and_determinism(autoaugment):
    transform = augment.train_transform(autoaugment=autoaugment)
    crop, flip = transform.transforms[:2]
    assert isinstance(crop, v2.RandomCrop) and crop.size == (32, 32) and crop.padding == [4, 4, 4, 4]
    assert isinstance(flip, v2.RandomHorizontalFlip) and flip.p == 0.5
    kinds = [type(t) for t in transform.transforms[2:]]
    if autoaugment:
        assert kinds[0] is v2.AutoAugment and transform.transforms[2].policy == v2.AutoAugmentPolicy.CIFAR10
        assert transform.transforms[2].fill == 128
        assert kinds[-1] is augment.Cutout and transform.transforms[-1].length == 16
    else:
        rra = transform.transforms[2]
        assert isinstance(rra, RandomRandAugment) and (rra.n, rra.m_max) == (1, 10)
    # crop pads with 128: a black image shifted by the crop shows grey borders
    torch.manual_seed(0)
    greys = [np.array(crop(Image.fromarray(np.zeros((32, 32, 3), np.uint8)))) for _ in range(20)]
    assert any((g == 128).any() for g in greys) and all(set(np.unique(g)) <= {0, 128} for g in greys)
    ds = SeededDataset(ImageList(transform))
    a, b, c = ds[(1, 123)], ds[(1, 123)], ds[(1, 124)]
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cutout_on_normalised_tensor():
    cutout = augment.Cutout(n_holes=1, length=16)
    for seed in range(10):
        torch.manual_seed(seed)
        y, x = int(torch.randint(32, ())), int(torch.randint(32, ()))
        torch.manual_seed(seed)
        out = cutout(torch.ones(3, 32, 32))
        expected = torch.ones(3, 32, 32)
        expected[:, max(0, y - 8):min(32, y + 8), max(0, x - 8):min(32, x + 8)] = 0
        assert torch.equal(out, expected)
