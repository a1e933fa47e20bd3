"""Pseudo-labelling: the class-balanced curriculum (CBC) of SPEC §2.1 and the global curriculum of §2.2.

Everything runs with torch on the tensors' device; nothing loops over pixels in Python.

Segmentation labelling is two passes over the unlabelled set:

1. :class:`CBCSampler` collects (predicted class, confidence) of every ``stride``-th pixel of each
   image (row-major, from index 0), batch by batch, on the device; :meth:`CBCSampler.thresholds`
   turns them into one threshold per class with :func:`class_balanced_thresholds` (samples of all
   torchrun ranks pooled, so the thresholds equal a single process's);
2. :func:`apply_thresholds` labels every pixel with its argmax class, or 255 where its confidence
   is below its class's threshold (strictly), and keeps the confidence.
"""
from __future__ import annotations

import math

import torch

from utils import distributed

IGNORE_INDEX = 255
MISSING_CLASS_THRESHOLD = 1e-5  # SPEC §2.1: a class with n·r < 1 keeps every pixel predicted as it


BUCKET_SHIFT = 14  # radix-select buckets: the top 16 of the 30 bits a float32 in [0, 1] uses
NUM_BUCKETS = (0x3F800000 >> BUCKET_SHIFT) + 1  # 1.0f's bit pattern is 0x3F800000


def class_balanced_thresholds(confidences: torch.Tensor, labels: torch.Tensor, num_classes: int,
                              ratio: float) -> torch.Tensor:
    """Per-class CBC thresholds t_c of SPEC §2.1 step 5 (float32, on the inputs' device).

    With the n_c samples of class c sorted ascending as P_c:
    ratio ≥ 1 → P_c[0] (the class minimum); n_c·ratio < 1 → 1e-5; else P_c[n_c − ⌊n_c·ratio⌋ − 1].
    A class without samples gets 1e-5 for any ratio (the original crashed at ratio ≥ 1, SPEC §11.10).

    Exact order statistics without a full sort (radix select): for non-negative float32 values the
    int32 bit pattern orders like the value, so one ``bincount`` over (class, top bits) locates the
    bucket holding each class's wanted rank, and only the few samples in those buckets are sorted.
    """
    confidences = confidences.reshape(-1).float()
    labels = labels.reshape(-1)
    device = confidences.device
    if labels.numel() == 0:
        return torch.full((num_classes,), MISSING_CLASS_THRESHOLD, device=device)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) for the thresholds")
    if confidences.min() < 0:
        raise ValueError("confidences must be probabilities (non-negative)")
    # int32 arithmetic throughout (half the memory traffic of int64): class·buckets + bucket < 2³¹.
    labels = labels.int()
    bits = confidences.contiguous().view(torch.int32)
    key = labels * NUM_BUCKETS + (bits >> BUCKET_SHIFT).clamp_max(NUM_BUCKETS - 1)
    hist = torch.bincount(key, minlength=num_classes * NUM_BUCKETS).view(num_classes, NUM_BUCKETS)
    cum = hist.cumsum(1)
    counts = cum[:, -1]
    if ratio >= 1:
        rank = torch.zeros_like(counts)
        usable = counts > 0
    else:
        kept = torch.floor(counts.double() * float(ratio)).long()  # ⌊n_c·r⌋ as Python's int(n*r)
        rank = (counts - kept - 1).clamp_min(0)
        usable = counts.double() * float(ratio) >= 1
    # The bucket of each class that holds its rank-th smallest sample, and the rank inside it.
    bucket = torch.searchsorted(cum, rank.unsqueeze(1), right=True).squeeze(1).clamp_max(NUM_BUCKETS - 1)
    classes = torch.arange(num_classes, device=device)
    in_bucket = hist[classes, bucket]
    rank_in_bucket = rank - (cum[classes, bucket] - in_bucket)
    # Sort only the samples of the chosen buckets, by (class, value).
    chosen = key == (classes * NUM_BUCKETS + bucket).int()[labels]
    candidates = torch.sort((labels[chosen].long() << 31) + bits[chosen].long()).values
    first = torch.cumsum(in_bucket, 0) - in_bucket
    index = (first + rank_in_bucket).clamp(0, max(candidates.numel() - 1, 0))
    picked = (candidates[index] & 0x7FFFFFFF).int().view(torch.float32) if candidates.numel() \
        else torch.zeros(num_classes, device=device)
    return torch.where(usable, picked, torch.full_like(picked, MISSING_CLASS_THRESHOLD)).float()


def sample_pixels(confidence: torch.Tensor, label: torch.Tensor, stride: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``stride``-th pixel of each image, flattened row-major from index 0 (SPEC §2.1 step 4).

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
    """``label``, set to ``ignore_index`` where confidence < t_label (strict, SPEC §2.1 step 6).

    Takes the (possibly fp16-rounded) confidences the labeller stores, so the 255 decisions match
    the files exactly.
    """
    return label.masked_fill(confidence < thresholds.to(confidence.dtype)[label], ignore_index)


def apply_thresholds(probs: torch.Tensor, thresholds: torch.Tensor, ignore_index: int = IGNORE_INDEX
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(label, confidence)`` from softmax probabilities ``(C, H, W)`` or ``(N, C, H, W)``.

    label = argmax, set to ``ignore_index`` where confidence < t_label (strict, SPEC §2.1 step 6);
    confidence = max probability at every pixel, ignored ones included.
    """
    confidence, label = probs.max(dim=-3)
    return threshold_labels(confidence, label, thresholds, ignore_index), confidence


def global_confidence_threshold(confidences: torch.Tensor, ratio: float) -> torch.Tensor:
    """The classification curriculum threshold k of SPEC §2.2 (images with confidence > k are kept).

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


def select_confident(confidences: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean mask of the images the classification curriculum keeps (strictly above k)."""
    return confidences.reshape(-1).float() > global_confidence_threshold(confidences, ratio)


def kept_fraction(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> float:
    """Fraction of pixels not ignored (the labelling pass prints it)."""
    return float((labels != ignore_index).float().mean()) if labels.numel() else math.nan
