"""Colours of label maps: the PASCAL VOC colour map (the palette of VOC's label PNGs, a property of
the format), the Cityscapes colours of its 19 train ids, and the image | ground truth | prediction
strips shown in TensorBoard."""
from __future__ import annotations

import numpy as np
import torch

from segmentation.transforms import COCO_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD


def voc_palette() -> np.ndarray:
    """The standard PASCAL VOC colormap, (256, 3) uint8 (index 255 = (224, 224, 192))."""
    idx = np.arange(256)
    cmap = np.zeros((256, 3), dtype=np.int64)
    for j in range(8):  # 8 bit positions, vectorised over the 256 indices
        for ch in range(3):
            cmap[:, ch] |= ((idx >> (3 * j + ch)) & 1) << (7 - j)
    return cmap.astype(np.uint8)


VOC_PALETTE = voc_palette()

# Cityscapes' official colours of the 19 evaluated classes, in train-id order (road … bicycle).
CITY_TRAIN_ID_COLOURS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32))
CITY_PALETTE = np.zeros((256, 3), dtype=np.uint8)  # unused indices black
CITY_PALETTE[:len(CITY_TRAIN_ID_COLOURS)] = CITY_TRAIN_ID_COLOURS
CITY_PALETTE[255] = VOC_PALETTE[255]  # ignored pixels in VOC's cream in both palettes

VAL_PICTURES = 4  # validation images shown in TensorBoard at every validation (val/pictures/<i>)


def palette(dataset: str) -> np.ndarray:
    """(256, 3) uint8 colours of the class indices: the standard VOC colormap (255 = cream), or the
    Cityscapes colours of the 19 train ids (unused ids black, 255 cream)."""
    if dataset == "voc":
        return VOC_PALETTE.copy()
    if dataset != "city":
        raise ValueError(f"dataset must be 'voc' or 'city', got {dataset!r}")
    return CITY_PALETTE.copy()


def denormalise(images: torch.Tensor, norm: str) -> torch.Tensor:
    """Normalised N×3×H×W model inputs (:class:`segmentation.transforms.Normalize`) → uint8 RGB."""
    x = images.float()
    if norm == "coco":
        x = (x + torch.tensor(COCO_MEAN_BGR, device=x.device).view(1, 3, 1, 1)).flip(1)
    else:
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x * std + mean) * 255.0
    return x.round().clamp(0, 255).to(torch.uint8)


def colourise(labels: torch.Tensor, colours: np.ndarray) -> torch.Tensor:
    """N×H×W class indices (0..255) → N×3×H×W uint8 colours."""
    lut = torch.from_numpy(colours).to(labels.device)
    return lut[labels.long().clamp(0, 255)].permute(0, 3, 1, 2)


def picture_strips(samples: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, norm: str, dataset: str) -> list[np.ndarray]:
    """One uint8 3×H×3W strip per sample: the image | its ground truth | the prediction, in the
    dataset's palette (ignored ground-truth pixels in the colour of 255)."""
    if samples is None:
        return []
    images, labels, predictions = samples
    colours = palette(dataset)
    strips = torch.cat([denormalise(images, norm), colourise(labels, colours), colourise(predictions, colours)], dim=3)
    return [strip.numpy() for strip in strips]


def sample_strip(rgb: np.ndarray, pseudo: np.ndarray, gt: np.ndarray | None, colours: np.ndarray) -> np.ndarray:
    """H×(2 or 3)W×3 uint8: the image, its pseudo labels (ignored pixels in the 255 colour) and the
    ground truth, side by side with 2-pixel white gaps."""
    h, w = pseudo.shape
    gap = np.full((h, 2, 3), 255, dtype=np.uint8)
    parts = [rgb[:h, :w], gap, colours[pseudo.astype(np.uint8)]]
    if gt is not None:
        parts += [gap, colours[gt[:h, :w].astype(np.uint8)]]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))
