"""CIFAR-10 augmentation (docs/method.md §6.2): RandomRandAugment, the train/test transforms and the --aa variant.

Images are PIL RGB images until ``to_normalised_tensor`` (like the original, whose ops were PIL ops);
every op below goes through ``torchvision.transforms.v2.functional``, whose PIL kernels are the
same PIL calls the original made (ImageOps.solarize/posterize/autocontrast/equalize/invert,
ImageEnhance.Color/Contrast/Brightness/Sharpness, Image.rotate, Image.transform(AFFINE), nearest
sampling, black fill), so each op's output equals the original op's pixel for pixel.

**RandomRandAugment(n, m_max)** (DMT's modification of ildoonet/pytorch-randaugment): per image,
``random.choices`` picks n ops from the 16 below with replacement, ``random.randint(1, m_max)`` one
magnitude m, and each op gets v = (m/10)·(max − min) + min (:func:`op_magnitude`):

========================  ==========  ===========================================================
op                        (min, max)  effect of v
========================  ==========  ===========================================================
AutoContrast, Equalize,   (0, 1)      v unused
Invert
Rotate                    (0, 30)     rotate by ±v degrees about the centre
Posterize                 (0, 4)      keep max(1, int(v)) bits
Solarize                  (0, 256)    invert pixels >= v
SolarizeAdd               (0, 110)    add v (clip to 0..255), then invert pixels >= 128
Color, Contrast,          (0.1, 1.9)  PIL ImageEnhance factor v
Brightness, Sharpness
ShearX, ShearY            (0, 0.3)    out(x, y) = in(x ± v·y, y) (resp. in(x, y ± v·x)), about (0, 0)
CutoutAbs                 (0, 40)     fill a square with (125, 123, 114), see :func:`cutout_abs`
TranslateXabs/Yabs        (0, 100)    shift by ±v px (out(x, y) = in(x ± v, y)); m >= 4 empties 32 px
========================  ==========  ===========================================================

"±" is a random sign: negated when ``random.random() > 0.5``, as in the original. All randomness comes
from Python's ``random`` (CutoutAbs's centre included, where the original used numpy's RNG, docs/method.md
§11.8) and from torch's RNG (crop, flip, AutoAugment, Cutout), so seeding both per sample
(:class:`utils.trainer.SeededDataset`) makes a sample's augmentation deterministic. With the same
``random`` state, op choice, m and signs are the original's.

Transforms (docs/method.md §6.2): :func:`train_transform` = RandomCrop 32 (pad 4, fill 128) → flip 0.5 →
RandomRandAugment(1, 10) → tensor → Normalize; ``train_transform(autoaugment=True)`` (the ``--aa``
variant) = crop → flip → torchvision AutoAugment CIFAR10 policy (fill 128) → tensor → Normalize →
Cutout (1 hole, 16 px, on the normalised tensor); :func:`eval_transform` (test and labelling) = tensor → Normalize.
The --aa policy is torchvision's, not the original's DeepVoltaire CIFAR10Policy copy (same 25
sub-policies; torchvision's magnitude bins differ slightly).
"""
from __future__ import annotations

import math
import random
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

CIFAR10_MEAN = (0.49137, 0.48235, 0.44667)
CIFAR10_STD = (0.24706, 0.24353, 0.26157)
CROP_SIZE = 32
CROP_PADDING = 4
PAD_FILL = 128
CUTOUT_ABS_FILL = (125, 123, 114)
SOLARIZE_ADD_THRESHOLD = 128
CUTOUT_LENGTH = 16  # the --aa variant's Cutout
DEFAULT_N = 1
DEFAULT_M_MAX = 10

# The 16 ops of ildoonet/pytorch-randaugment's augment_list(), in its order, with (min, max).
RANDAUGMENT_OPS: tuple[tuple[str, float, float], ...] = (
    ("AutoContrast", 0, 1),
    ("Equalize", 0, 1),
    ("Invert", 0, 1),
    ("Rotate", 0, 30),
    ("Posterize", 0, 4),
    ("Solarize", 0, 256),
    ("SolarizeAdd", 0, 110),
    ("Color", 0.1, 1.9),
    ("Contrast", 0.1, 1.9),
    ("Brightness", 0.1, 1.9),
    ("Sharpness", 0.1, 1.9),
    ("ShearX", 0.0, 0.3),
    ("ShearY", 0.0, 0.3),
    ("CutoutAbs", 0, 40),
    ("TranslateXabs", 0.0, 100),
    ("TranslateYabs", 0.0, 100),
)
OP_RANGES: dict[str, tuple[float, float]] = {name: (lo, hi) for name, lo, hi in RANDAUGMENT_OPS}


def op_magnitude(name: str, m: int) -> float:
    """v = (m / 10) · (max − min) + min, the original's float arithmetic (not the library's m / 30)."""
    lo, hi = OP_RANGES[name]
    return (float(m) / 10) * float(hi - lo) + lo


def random_sign(v: float) -> float:
    """-v when ``random.random() > 0.5``, else v (one draw, as the original)."""
    return -v if random.random() > 0.5 else v


def posterize_bits(v: float) -> int:
    return max(1, int(v))


def solarize_add(image: Image.Image, v: float) -> Image.Image:
    """Add v to every channel (float, clip to 0..255, truncate to uint8), then solarize at 128."""
    added = np.clip(np.asarray(image).astype(np.float64) + v, 0, 255).astype(np.uint8)
    return F.solarize(Image.fromarray(added, image.mode), SOLARIZE_ADD_THRESHOLD)


def cutout_box(width: int, height: int, v: float, centre_x: float, centre_y: float) -> tuple[int, int, int, int]:
    """Inclusive pixel box (x0, y0, x1, y1) of CutoutAbs with the given centre (the original's PIL rule).

    x0 = int(max(0, cx − v/2)), x1 = min(w, x0 + v), drawn by PIL's ``rectangle`` with both
    ends included and clipped to the image, so an unclipped square is int(v) + 1 px wide; near the
    left/top edge it is shifted, not shrunk; near the right/bottom edge it is clipped.
    """
    x0 = int(max(0.0, centre_x - v / 2.0))
    y0 = int(max(0.0, centre_y - v / 2.0))
    x1 = min(width - 1, int(min(width, x0 + v)))
    y1 = min(height - 1, int(min(height, y0 + v)))
    return x0, y0, x1, y1


def cutout_abs(image: Image.Image, v: float) -> Image.Image:
    """CutoutAbs: centre (cx, cy) uniform in [0, w) x [0, h) from ``random``; see :func:`cutout_box`."""
    if v < 0:
        return image
    width, height = image.size
    centre_x = random.uniform(0, width)
    centre_y = random.uniform(0, height)
    x0, y0, x1, y1 = cutout_box(width, height, v, centre_x, centre_y)
    array = np.array(image)
    array[y0:y1 + 1, x0:x1 + 1] = CUTOUT_ABS_FILL
    return Image.fromarray(array, image.mode)


def _shear(image: Image.Image, shear_x: float, shear_y: float) -> Image.Image:
    """PIL ``transform(AFFINE, (1, shear_x, 0, shear_y, 1, 0))``: out(x, y) = in(x + sx·y, y + sy·x)."""
    return F.affine(image, angle=0.0, translate=[0.0, 0.0], scale=1.0,
                    shear=[math.degrees(math.atan(shear_x)), math.degrees(math.atan(shear_y))],
                    interpolation=v2.InterpolationMode.NEAREST, center=[0.0, 0.0])


def _translate(image: Image.Image, dx: float, dy: float) -> Image.Image:
    """PIL ``transform(AFFINE, (1, 0, dx, 0, 1, dy))``: out(x, y) = in(x + dx, y + dy), black outside."""
    return F.affine(image, angle=0.0, translate=[-dx, -dy], scale=1.0, shear=[0.0, 0.0],
                    interpolation=v2.InterpolationMode.NEAREST)


GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXabs", "TranslateYabs")


def geometric_op(name: str, image: Image.Image, signed_v: float) -> Image.Image:
    """One of :data:`GEOMETRIC_OPS` with its random sign already applied to ``signed_v`` (nearest, black fill).

    Every output pixel is a copy of one input pixel or black, so the op is an index map
    (:mod:`classification.batch_augment` reads it off this function)."""
    if name == "Rotate":
        return F.rotate(image, signed_v, interpolation=v2.InterpolationMode.NEAREST)
    if name == "ShearX":
        return _shear(image, signed_v, 0.0)
    if name == "ShearY":
        return _shear(image, 0.0, signed_v)
    if name == "TranslateXabs":
        return _translate(image, signed_v, 0.0)
    if name == "TranslateYabs":
        return _translate(image, 0.0, signed_v)
    raise ValueError(f"{name!r} is not one of the geometric ops {GEOMETRIC_OPS}")


_OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "AutoContrast": lambda img, v: F.autocontrast(img),
    "Equalize": lambda img, v: F.equalize(img),
    "Invert": lambda img, v: F.invert(img),
    "Rotate": lambda img, v: geometric_op("Rotate", img, random_sign(v)),
    "Posterize": lambda img, v: F.posterize(img, posterize_bits(v)),
    "Solarize": lambda img, v: F.solarize(img, v),
    "SolarizeAdd": solarize_add,
    "Color": lambda img, v: F.adjust_saturation(img, v),
    "Contrast": lambda img, v: F.adjust_contrast(img, v),
    "Brightness": lambda img, v: F.adjust_brightness(img, v),
    "Sharpness": lambda img, v: F.adjust_sharpness(img, v),
    "ShearX": lambda img, v: geometric_op("ShearX", img, random_sign(v)),
    "ShearY": lambda img, v: geometric_op("ShearY", img, random_sign(v)),
    "CutoutAbs": cutout_abs,
    "TranslateXabs": lambda img, v: geometric_op("TranslateXabs", img, random_sign(v)),
    "TranslateYabs": lambda img, v: geometric_op("TranslateYabs", img, random_sign(v)),
}
assert set(_OPS) == set(OP_RANGES)


def randaugment_op(name: str, image: Image.Image, v: float) -> Image.Image:
    """Apply RandAugment op ``name`` with value ``v`` (random sign / Cutout centre drawn from ``random``)."""
    if name not in _OPS:
        raise ValueError(f"unknown RandAugment op {name!r}; one of {[n for n, _, _ in RANDAUGMENT_OPS]}")
    return _OPS[name](image, v)


class RandomRandAugment:
    """n ops chosen uniformly with replacement, one magnitude m ~ U{1..m_max} per image (docs/method.md §6.2)."""

    def __init__(self, n: int = DEFAULT_N, m_max: int = DEFAULT_M_MAX) -> None:
        if n < 1 or m_max < 1:
            raise ValueError(f"RandomRandAugment needs n >= 1 and m_max >= 1, got n={n}, m_max={m_max}")
        self.n, self.m_max = n, m_max

    def draw(self) -> tuple[list[str], int]:
        """(op names, m) for one image: ``random.choices(ops, k=n)`` then ``random.randint(1, m_max)``."""
        ops = random.choices(RANDAUGMENT_OPS, k=self.n)
        return [name for name, _, _ in ops], random.randint(1, self.m_max)

    def __call__(self, image: Image.Image) -> Image.Image:
        names, m = self.draw()
        for name in names:
            image = randaugment_op(name, image, op_magnitude(name, m))
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, m_max={self.m_max})"


class Cutout:
    """uoguelph-mlrg Cutout on a (C, H, W) tensor: zero ``n_holes`` squares of side ``length`` centred at
    uniform integer pixels (torch RNG), clipped to the image (the --aa variant, after Normalize)."""

    def __init__(self, n_holes: int = 1, length: int = CUTOUT_LENGTH) -> None:
        self.n_holes, self.length = n_holes, length

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        image = image.clone()
        half = self.length // 2
        for _ in range(self.n_holes):
            y = int(torch.randint(height, ()))
            x = int(torch.randint(width, ()))
            image[..., max(0, y - half):min(height, y + half), max(0, x - half):min(width, x + half)] = 0
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_holes={self.n_holes}, length={self.length})"


def to_normalised_tensor() -> list[Callable]:
    """ToTensor (uint8 HWC -> float CHW in [0, 1]) then Normalize with the CIFAR-10 mean/std."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR10_MEAN, CIFAR10_STD),
            v2.ToPureTensor()]


def eval_transform() -> v2.Compose:
    """Test and labelling transform: ToTensor → Normalize."""
    return v2.Compose(to_normalised_tensor())


def train_transform(autoaugment: bool = False, n: int = DEFAULT_N, m_max: int = DEFAULT_M_MAX) -> v2.Compose:
    """Crop (pad 4, fill 128) → flip → RandomRandAugment(n, m_max) → tensor → Normalize; with
    ``autoaugment`` (--aa): crop → flip → AutoAugment CIFAR10 (fill 128) → tensor → Normalize → Cutout."""
    head = [v2.RandomCrop(CROP_SIZE, padding=CROP_PADDING, fill=PAD_FILL), v2.RandomHorizontalFlip(0.5)]
    if autoaugment:
        return v2.Compose(head + [v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=PAD_FILL)]
                          + to_normalised_tensor() + [Cutout(1, CUTOUT_LENGTH)])
    return v2.Compose(head + [RandomRandAugment(n, m_max)] + to_normalised_tensor())
