"""Joint image / label (/ confidence) transforms for segmentation (docs/method.md §6.1).

A sample is ``(image, target)``: ``image`` a :class:`tv_tensors.Image` (uint8 or float, 3×H×W, RGB),
``target`` a :class:`tv_tensors.Mask` that is either an int64 H×W ground-truth label map or a
float32 2×H×W pseudo-label map (channel 0 label, channel 1 confidence; docs/method.md §2.1). ``target`` may be
absent (``transforms(image)``). Geometric transforms move both together; masks always use nearest
interpolation and are padded with 255 — on *both* pseudo channels.

Faithful details (docs/method.md §6.1, §11.12–13):

* The image is turned into float **without rescaling** (0–255) first; padding therefore puts raw
  value 0 (black) at the border, *before* normalisation.
* All randomness (scale factor, crop offsets, flip) comes from Python's ``random`` module, as in the
  original; :class:`utils.trainer.SeededDataset` seeds it per sample.
* RandomScale draws s ~ U(0.5, 1.5) and resizes to ``(int(s·h), int(s·w))``: image bilinear with
  ``align_corners=False`` and no antialiasing, masks nearest (``mode="nearest"``, not "nearest-exact").
* City label ids are mapped to train ids at the very end (a 256-entry lookup table); float pseudo
  maps are already train ids and pass through untouched.

Pipelines (``train_transforms`` / ``test_transforms``)::

    VOC train : ToFloat → RandomScale → PadCrop(crop) → Flip → Normalize
    City train: ToFloat → Resize(512×1024) → RandomScale → PadCrop(crop) → Flip → Normalize → LabelIdToTrainId
    VOC test  : ToFloat → PadTo(505×505) → Normalize
    City test : ToFloat → Resize(512×1024) → Normalize → LabelIdToTrainId
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from segmentation.run_config import CITY_CROP_SIZE, CITY_SIZE, VOC_CROP_SIZE, VOC_TEST_SIZE
from utils.losses import IGNORE_INDEX  # noqa: F401 (also re-exported for the data tools)

# COCO/Caffe convention: 0–255, BGR channel order, mean in BGR order, std 1.
COCO_MEAN_BGR = (104.008, 116.669, 122.675)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("coco", "imagenet")

# Cityscapes labelId -> trainId (docs/method.md §5.1); every other id maps to 255.
CITY_LABEL_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                          24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITY_NUM_LABEL_IDS = 34  # labelIds are 0..33


def city_label_lut() -> torch.Tensor:
    """The 256-entry int64 lookup table labelId → trainId (255 for unmapped ids, and for 255)."""
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
    for label_id, train_id in CITY_LABEL_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


def map_city_label_ids(labels: torch.Tensor) -> torch.Tensor:
    """Map an integer tensor of Cityscapes labelIds (values 0..255) to train ids, vectorised."""
    lut = city_label_lut().to(labels.device)
    return lut[labels.long()]


def _unwrap(x: torch.Tensor) -> torch.Tensor:
    return x.as_subclass(torch.Tensor)


class JointTransform(v2.Transform):
    """Base for transforms that treat images and masks differently; other inputs pass through."""

    _transformed_types = (tv_tensors.Image, tv_tensors.Mask)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Image):
            return self.transform_image(inpt, params)
        return self.transform_mask(inpt, params)

    def transform_image(self, image: tv_tensors.Image, params: dict[str, Any]) -> tv_tensors.Image:
        return image

    def transform_mask(self, mask: tv_tensors.Mask, params: dict[str, Any]) -> tv_tensors.Mask:
        return mask


class ToFloatImage(JointTransform):
    """uint8 image → float32 with the same 0–255 values (no rescaling; Normalize does that)."""

    def transform_image(self, image: tv_tensors.Image, params: dict[str, Any]) -> tv_tensors.Image:
        return tv_tensors.wrap(_unwrap(image).to(torch.float32), like=image)


def _resize_pair_image(image: tv_tensors.Image, size: Sequence[int]) -> tv_tensors.Image:
    return F.resize(image, list(size), interpolation=F.InterpolationMode.BILINEAR, antialias=False)


def _resize_pair_mask(mask: tv_tensors.Mask, size: Sequence[int]) -> tv_tensors.Mask:
    return F.resize(mask, list(size), interpolation=F.InterpolationMode.NEAREST)


class Resize(JointTransform):
    """Resize to a fixed (h, w): image bilinear (align_corners False, no antialias), masks nearest."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.size = (int(height), int(width))

    def transform_image(self, image: tv_tensors.Image, params: dict[str, Any]) -> tv_tensors.Image:
        return _resize_pair_image(image, self.size)

    def transform_mask(self, mask: tv_tensors.Mask, params: dict[str, Any]) -> tv_tensors.Mask:
        return _resize_pair_mask(mask, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class RandomScale(JointTransform):
    """Aspect-preserving random scale: s ~ U(min, max) (Python ``random``), size (int(s·h), int(s·w))."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 1.5) -> None:
        super().__init__()
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        s = random.uniform(self.min_scale, self.max_scale)
        # max(1, .) only matters for images a pixel or two high; int(s*h) as in the original otherwise.
        return {"size": (max(1, int(s * h)), max(1, int(s * w))), "scale": s}

    def transform_image(self, image: tv_tensors.Image, params: dict[str, Any]) -> tv_tensors.Image:
        return _resize_pair_image(image, params["size"])

    def transform_mask(self, mask: tv_tensors.Mask, params: dict[str, Any]) -> tv_tensors.Mask:
        return _resize_pair_mask(mask, params["size"])

    def extra_repr(self) -> str:
        return f"min_scale={self.min_scale}, max_scale={self.max_scale}"


def _pad_bottom_right(inpt: torch.Tensor, pad_h: int, pad_w: int, fill: float) -> torch.Tensor:
    if pad_h == 0 and pad_w == 0:
        return inpt
    return F.pad(inpt, [0, 0, pad_w, pad_h], fill=fill)  # [left, top, right, bottom]


class PadTo(JointTransform):
    """Pad bottom/right to at least (h, w): image ``image_fill`` (0, raw pixel value), masks
    ``label_fill`` (255; both pseudo channels). Larger inputs are left as they are."""

    def __init__(self, height: int, width: int, image_fill: float = 0.0, label_fill: float = IGNORE_INDEX) -> None:
        super().__init__()
        self.size = (int(height), int(width))
        self.image_fill, self.label_fill = image_fill, label_fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        return {"pad_h": max(self.size[0] - h, 0), "pad_w": max(self.size[1] - w, 0)}

    def _apply(self, inpt: torch.Tensor, params: dict[str, Any], fill: float) -> torch.Tensor:
        return _pad_bottom_right(inpt, params["pad_h"], params["pad_w"], fill)

    def transform_image(self, image: tv_tensors.Image, params: dict[str, Any]) -> tv_tensors.Image:
        return self._apply(image, params, self.image_fill)

    def transform_mask(self, mask: tv_tensors.Mask, params: dict[str, Any]) -> tv_tensors.Mask:
        return self._apply(mask, params, self.label_fill)

    def extra_repr(self) -> str:
        return f"size={self.size}, image_fill={self.image_fill}, label_fill={self.label_fill}"


class PadCrop(PadTo):
    """Pad bottom/right to at least (crop_h, crop_w) as :class:`PadTo`, then crop (crop_h, crop_w) at
    uniform integer offsets: ``top = random.randint(0, H − crop_h)`` then ``left = random.randint(0,
    W − crop_w)``; no random number is drawn when the padded size equals the crop (as torchvision's
    old ``RandomCrop.get_params``, which the original used).
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params = super().make_params(flat_inputs)
        h, w = v2.query_size(flat_inputs)
        (ch, cw), padded_h, padded_w = self.size, h + params["pad_h"], w + params["pad_w"]
        if (padded_h, padded_w) == (ch, cw):
            top = left = 0
        else:
            top = random.randint(0, padded_h - ch)
            left = random.randint(0, padded_w - cw)
        return {**params, "top": top, "left": left}

    def _apply(self, inpt: torch.Tensor, params: dict[str, Any], fill: float) -> torch.Tensor:
        return F.crop(super()._apply(inpt, params, fill), params["top"], params["left"], *self.size)


class RandomHorizontalFlip(JointTransform):
    """Flip image and masks together with probability p (``random.random() < p``)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = float(p)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"flip": random.random() < self.p}

    def transform_image(self, image: tv_tensors.Image, params: dict[str, Any]) -> tv_tensors.Image:
        return F.horizontal_flip(image) if params["flip"] else image

    def transform_mask(self, mask: tv_tensors.Mask, params: dict[str, Any]) -> tv_tensors.Mask:
        return F.horizontal_flip(mask) if params["flip"] else mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Normalize(JointTransform):
    """Normalise a float RGB image holding 0–255 values; masks pass through.

    ``"coco"``: keep 0–255, reorder RGB→BGR, subtract :data:`COCO_MEAN_BGR` (std 1).
    ``"imagenet"``: divide by 255, subtract :data:`IMAGENET_MEAN`, divide by :data:`IMAGENET_STD` (RGB).
    """

    def __init__(self, convention: str) -> None:
        super().__init__()
        if convention not in NORMALIZATIONS:
            raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {convention!r}")
        self.convention = convention

    def transform_image(self, image: tv_tensors.Image, params: dict[str, Any]) -> tv_tensors.Image:
        x = _unwrap(image)
        if not x.is_floating_point():
            x = x.to(torch.float32)
        if self.convention == "coco":
            mean = torch.tensor(COCO_MEAN_BGR, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            x = x.flip(-3) - mean
        else:
            mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            x = (x / 255.0 - mean) / std
        return tv_tensors.wrap(x, like=image)

    def extra_repr(self) -> str:
        return f"convention={self.convention!r}"


class LabelIdToTrainId(JointTransform):
    """Cityscapes labelId → trainId on integer (ground-truth) masks; float pseudo maps pass through
    because they already hold train ids (docs/method.md §2.1)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("lut", city_label_lut(), persistent=False)

    def transform_mask(self, mask: tv_tensors.Mask, params: dict[str, Any]) -> tv_tensors.Mask:
        if mask.is_floating_point():
            return mask
        return tv_tensors.wrap(self.lut.to(mask.device)[_unwrap(mask).long()], like=mask)


def _check_dataset(dataset: str) -> None:
    if dataset not in ("voc", "city"):
        raise ValueError(f"dataset must be 'voc' or 'city', got {dataset!r}")


def train_transforms(dataset: str, crop: Sequence[int] | None = None, norm: str = "imagenet",
                     resize: Sequence[int] | None = None,
                     scale_range: tuple[float, float] = (0.5, 1.5), flip_p: float = 0.5) -> v2.Compose:
    """Training pipeline (labelled and pseudo samples alike), docs/method.md §6.1.

    ``crop`` defaults to 321×321 (VOC) / 256×512 (City); ``resize`` (City only, default 512×1024) is
    the size City images and labels are first resized to.
    """
    _check_dataset(dataset)
    crop = tuple(crop) if crop is not None else (VOC_CROP_SIZE if dataset == "voc" else CITY_CROP_SIZE)
    steps: list[v2.Transform] = [ToFloatImage()]
    if dataset == "city":
        steps.append(Resize(*(resize if resize is not None else CITY_SIZE)))
    elif resize is not None:
        raise ValueError("resize applies to Cityscapes only (VOC trains at the original resolution)")
    steps += [RandomScale(*scale_range), PadCrop(*crop), RandomHorizontalFlip(flip_p), Normalize(norm)]
    if dataset == "city":
        steps.append(LabelIdToTrainId())
    return v2.Compose(steps)


def test_transforms(dataset: str, norm: str = "imagenet", size: Sequence[int] | None = None) -> v2.Compose:
    """Test / labelling pipeline: VOC pads bottom/right to ``size`` (default 505×505, label 255);
    City resizes to ``size`` (default 512×1024) and maps label ids to train ids."""
    _check_dataset(dataset)
    if dataset == "voc":
        size = tuple(size) if size is not None else VOC_TEST_SIZE
        return v2.Compose([ToFloatImage(), PadTo(*size), Normalize(norm)])
    size = tuple(size) if size is not None else CITY_SIZE
    return v2.Compose([ToFloatImage(), Resize(*size), Normalize(norm), LabelIdToTrainId()])


test_transforms.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite the name
