"""Pseudo-labelling: the class-balanced curriculum (CBC) of docs/method.md §2.1 and the global curriculum of §2.2.

Everything runs with torch on the tensors' device; nothing loops over pixels in Python.

Segmentation labelling (:mod:`segmentation.labeling`, one forward pass per image):

1. :class:`CBCSampler` collects (predicted class, confidence) of every ``stride``-th pixel of each
   image (row-major, from index 0), batch by batch, on the device; :meth:`CBCSampler.thresholds`
   turns them into one threshold per class with :func:`class_balanced_thresholds` (samples of all
   torchrun ranks pooled, so the thresholds equal a single process's);
2. :func:`threshold_labels` labels every pixel with its argmax class, or
   255 where its confidence is below its class's threshold (strictly), and keep the confidence.
"""
from __future__ import annotations

import torch

from utils import distributed
from utils.losses import IGNORE_INDEX
MISSING_CLASS_THRESHOLD = 1e-5  # docs/method.md §2.1: a class with n·r < 1 keeps every pixel predicted as it


def class_balanced_thresholds(confidences: torch.Tensor, labels: torch.Tensor, num_classes: int,
                              ratio: float) -> torch.Tensor:
    """Per-class CBC thresholds t_c of docs/method.md §2.1 step 5 (float32, on the inputs' device).

    With the n_c samples of class c sorted ascending as P_c:
    ratio ≥ 1 → P_c[0] (the class minimum); n_c·ratio < 1 → 1e-5; else P_c[n_c − ⌊n_c·ratio⌋ − 1].
    A class without samples gets 1e-5 for any ratio (the original crashed at ratio ≥ 1, docs/method.md §11.10).

    Every P_c at once, on the device: the samples sorted by confidence, then stably by class, lie
    class after class, each class ascending; class c's P_c starts after the n_0 + … + n_{c−1}
    samples of the classes before it.
    """
    confidences = confidences.reshape(-1).float()
    labels = labels.reshape(-1).long()
    device = confidences.device
    if labels.numel() == 0:
        return torch.full((num_classes,), MISSING_CLASS_THRESHOLD, device=device)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) for the thresholds")
    if confidences.min() < 0:
        raise ValueError("confidences must be probabilities (non-negative)")
    by_value, order = torch.sort(confidences)
    small = torch.uint8 if num_classes <= 256 else torch.long  # the same order, a faster sort
    _, regroup = torch.sort(labels[order].to(small), stable=True)
    P = by_value[regroup]                                   # P_0, P_1, ..., P_{C-1}, each ascending
    n = torch.bincount(labels, minlength=num_classes)       # n_c
    start = torch.cumsum(n, 0) - n                          # where P_c begins
    if ratio >= 1:
        index = torch.zeros_like(n)                         # P_c[0]
        usable = n > 0
    else:
        kept = torch.floor(n.double() * float(ratio)).long()  # ⌊n_c·r⌋ as Python's int(n*r)
        index = n - kept - 1                                # P_c[n_c − ⌊n_c·r⌋ − 1]
        usable = n.double() * float(ratio) >= 1
    picked = P[(start + index.clamp_min(0)).clamp_max(P.numel() - 1)]
    return torch.where(usable, picked, torch.full_like(picked, MISSING_CLASS_THRESHOLD)).float()


def sample_pixels(confidence: torch.Tensor, label: torch.Tensor, stride: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``stride``-th pixel of each image, flattened row-major from index 0 (docs/method.md §2.1 step 4).

    ``confidence``/``label``: ``(H, W)`` or ``(N, H, W)`` (each image sampled on its own).
    """
    if confidence.dim() == 2:
        confidence, label = confidence.unsqueeze(0), label.unsqueeze(0)
    n = confidence.shape[0]
    return confidence.reshape(n, -1)[:, ::stride].reshape(-1), label.reshape(n, -1)[:, ::stride].reshape(-1)


class CBCSampler:
    """Collects CBC samples on the device across batches (and ranks); gives the per-class thresholds.

    A torchrun rank whose shard is empty adds nothing and still takes part in the pooling (its
    empty sample lists on ``device``), so every rank gets the same thresholds.
    """

    def __init__(self, num_classes: int, stride: int = 16, device: torch.device | str | None = None) -> None:
        self.num_classes, self.stride = num_classes, stride
        self.device = torch.device(device) if device is not None else None
        self._conf: list[torch.Tensor] = []
        self._label: list[torch.Tensor] = []
        self._pooled: tuple[torch.Tensor, torch.Tensor] | None = None

    def add(self, confidence: torch.Tensor, label: torch.Tensor) -> None:
        """Add one image ``(H, W)`` or a batch of same-size images ``(N, H, W)``."""
        conf, lab = sample_pixels(confidence, label, self.stride)
        self._conf.append(conf.float())
        self._label.append(lab.to(torch.uint8 if self.num_classes <= 256 else torch.long))
        self._pooled = None

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples of this process, then gathered from every torchrun rank (computed once)."""
        if self._pooled is None:
            if self._conf:
                conf, lab = torch.cat(self._conf), torch.cat(self._label).long()
            else:  # an empty shard (more ranks than images, or a short last shard)
                device = self.device if self.device is not None else torch.device("cpu")
                conf = torch.zeros(0, dtype=torch.float32, device=device)
                lab = torch.zeros(0, dtype=torch.long, device=device)
            self._pooled = (distributed.all_gather_cat(conf), distributed.all_gather_cat(lab))
        return self._pooled

    def thresholds(self, ratio: float) -> torch.Tensor:
        conf, lab = self.samples()
        return class_balanced_thresholds(conf, lab, self.num_classes, ratio)

    def missing_classes(self) -> list[int]:
        """Classes with no sample (the original appended them to exceptions.txt)."""
        _, lab = self.samples()
        counts = torch.bincount(lab, minlength=self.num_classes)
        return [int(c) for c in torch.nonzero(counts == 0).flatten().tolist()]


def threshold_labels(confidence: torch.Tensor, label: torch.Tensor, thresholds: torch.Tensor,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``label``, set to ``ignore_index`` where confidence < t_label (strict, docs/method.md §2.1 step 6).

    Takes the (possibly fp16-rounded) confidences the labeller stores, so the 255 decisions match
    the files exactly.
    """
    return label.masked_fill(confidence < thresholds.to(confidence.dtype)[label], ignore_index)


def global_confidence_threshold(confidences: torch.Tensor, ratio: float) -> torch.Tensor:
    """The classification curriculum threshold k of docs/method.md §2.2 (images with confidence > k are kept).

    ratio ≥ 1 → 0; else P[int(−r·N + 1)] of the ascending confidences (Python indexing, as the
    original: the (r·N − 1)-th largest value, so r·N − 2 images are kept without ties).
    """
    confidences = confidences.reshape(-1).float()
    if ratio >= 1:
        return confidences.new_zeros(())
    n = confidences.numel()
    index = int(-ratio * n + 1)
    if not -n <= index < n:
        raise ValueError(f"ratio {ratio} with {n} images selects index {index}, outside the sorted list")
    return torch.sort(confidences).values[index]
