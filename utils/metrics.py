"""Evaluation metrics on the device (docs/method.md §8): confusion matrix → pixel accuracy, IoU, mIoU; top-1
and the "fine-grained" accuracy of the classification programs. Results are read back once, at the end."""
from __future__ import annotations

import torch

from utils import distributed


class ConfusionMatrix:
    """Rows = ground truth, columns = prediction; counts pixels with 0 ≤ gt < C and pred ≠ 255."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    def update(self, target: torch.Tensor, prediction: torch.Tensor) -> None:
        target, prediction = target.reshape(-1).long(), prediction.reshape(-1).long()
        keep = (target >= 0) & (target < self.num_classes) & (prediction != self.ignore_index)
        # Excluded pixels go to one extra bin instead of being indexed out: no device→host sync.
        cells = self.num_classes ** 2
        index = torch.where(keep, target * self.num_classes + prediction.clamp(0, self.num_classes - 1), cells)
        counts = torch.bincount(index, minlength=cells + 1)[:cells]
        self.matrix += counts.view(self.num_classes, self.num_classes)

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the matrices of all torchrun ranks (no-op in a single process)."""
        distributed.all_reduce_sum_(self.matrix)
        return self

    def compute(self) -> dict[str, object]:
        """``pixel_acc`` and ``miou`` (×100, floats) and ``iou`` (a list of C per-class IoUs ×100).

        IoU = diag / (row + column − diag). mIoU averages the classes present in ground truth or
        prediction (NaN IoUs skipped); on VOC/Cityscapes val every class is present, so this is the
        original's mean over all C classes.
        """
        return confusion_scores(self.matrix)


def confusion_scores(matrix: torch.Tensor) -> dict[str, object]:
    """:meth:`ConfusionMatrix.compute` of a C×C matrix (rows ground truth, columns prediction):
    ``pixel_acc``, ``miou`` (NaN when empty) and per-class ``iou``, ×100."""
    h = matrix.double()
    diag = torch.diag(h)
    iou = diag / (h.sum(1) + h.sum(0) - diag)
    total = h.sum()
    pixel_acc = (diag.sum() / total) if total > 0 else torch.tensor(float("nan"))
    miou = torch.nanmean(iou) if torch.isfinite(iou).any() else torch.tensor(float("nan"))
    return {"pixel_acc": float(pixel_acc) * 100, "miou": float(miou) * 100,
            "iou": [float(v) * 100 for v in iou.cpu()]}


class AccuracyMeter:
    """Top-1 and fine-grained accuracy (Σ max-probability over correctly classified / count × 100)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # correct, confidence-weighted, count

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        probs = logits.float().softmax(dim=1)
        confidence, prediction = probs.max(dim=1)
        correct = prediction == target
        self.sums += torch.stack([correct.sum().double(), (confidence * correct).sum().double(),
                                  torch.tensor(float(target.numel()), dtype=torch.float64, device=target.device)])

    def all_reduce(self) -> "AccuracyMeter":
        distributed.all_reduce_sum_(self.sums)
        return self

    def compute(self) -> dict[str, float]:
        correct, weighted, count = (float(v) for v in self.sums.cpu())
        count = max(count, 1.0)
        return {"accuracy": correct / count * 100, "fine_grained": weighted / count * 100}
