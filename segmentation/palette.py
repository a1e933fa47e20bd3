"""The PASCAL VOC colour map: the palette of VOC's label PNGs (a property of the format)."""
from __future__ import annotations

import numpy as np


def voc_palette() -> np.ndarray:
    """The standard PASCAL VOC colormap, (256, 3) uint8 (index 255 = (224, 224, 192))."""
    idx = np.arange(256)
    cmap = np.zeros((256, 3), dtype=np.int64)
    for j in range(8):  # 8 bit positions, vectorised over the 256 indices
        for ch in range(3):
            cmap[:, ch] |= ((idx >> (3 * j + ch)) & 1) << (7 - j)
    return cmap.astype(np.uint8)


VOC_PALETTE = voc_palette()
