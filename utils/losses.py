"""DMT's dynamic mutual loss (SPEC §3.1), its ablations (§3.2) and the classification mixup loss (§3.3).

One function, :func:`dynamic_weights`, holds the agree/disagree weighting; every loss here builds on
it. Shapes: logits ``(N, C)`` (classification) or ``(N, C, H, W)`` (segmentation); targets hard
labels ``(N,)`` / ``(N, H, W)`` (integer) or label + confidence stacked on dim 1, ``(N, 2)`` /
``(N, 2, H, W)`` (float, confidence 1 for labelled samples). The batch holds the pseudo-labelled
samples first, then the labelled ones; ``split_index`` is the number of pseudo-labelled samples.

Statistics come back as 0-d tensors on the logits' device (no host sync): ``disagree``,
``current_win``, ``avg_weights`` and ``loss`` (= Σℓ/M, the unweighted loss), as in the original.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from utils import distributed

IGNORE_INDEX = 255


def split_targets(targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels long, confidences float)`` from hard labels (confidence 1) or label+confidence targets."""
    if targets.is_floating_point():
        return targets[:, 0].round().long(), targets[:, 1].float()
    return targets.long(), torch.ones(targets.shape, dtype=torch.float32, device=targets.device)


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """Half-precision (autocast) logits in float32; float32/float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def match_size(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Segmentation logits upsampled bilinearly (align_corners=True) to the label size (SPEC §3.1)."""
    if logits.dim() == 4 and logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=True)
    return logits


def dynamic_weights(probs: torch.Tensor, labels: torch.Tensor, confidences: torch.Tensor,
                    gamma1: float, gamma2: float, ignore_index: int = IGNORE_INDEX
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The agree/disagree weighting of SPEC §3.1, per sample/pixel, before the labelled override.

    ``probs``: the current model's detached softmax ``(N, C, ...)``; ``labels``/``confidences``: the
    teacher's label y and stored confidence c ``(N, ...)``. With d = argmax p, q = max p, p_y = p[y]:
    agree (d = y) → p_y^γ1; d ≠ y and q > c → 0; d ≠ y and q ≤ c → p_y^γ2.
    Also returns the masks ``agree``, ``current_win`` (d ≠ y and q > c), ``p_y``, ``decision``, ``q``.
    """
    q, decision = probs.max(dim=1)
    safe = labels.masked_fill(labels == ignore_index, 0)
    p_y = probs.gather(1, safe.unsqueeze(1)).squeeze(1)
    agree = decision == labels
    current_win = ~agree & (q > confidences)
    weights = torch.where(agree, p_y.pow(gamma1), torch.where(current_win, torch.zeros_like(p_y), p_y.pow(gamma2)))
    return weights, {"agree": agree, "current_win": current_win, "p_y": p_y, "decision": decision, "q": q}


def labelled_mask(labels: torch.Tensor, split_index: int) -> torch.Tensor:
    """True on the samples from ``split_index`` on (the labelled part of the batch)."""
    mask = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
    mask[split_index:] = True
    return mask.view(-1, *([1] * (labels.dim() - 1))).expand_as(labels)


def global_stats(sums: dict[str, torch.Tensor], means: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
    """Per-step statistics of the whole global batch, in one all_reduce under torchrun (as they are
    in a single process): ``sums`` are added over the ranks; ``means`` are per-rank values already
    divided by :func:`utils.distributed.mean_denominator` (global count / world), so their average
    over the ranks is the global mean."""
    world = distributed.info().world_size
    values = {**sums, **{k: (v / world if world > 1 else v) for k, v in (means or {}).items()}}
    return distributed.sum_over_ranks(values)


def _stats(labels, valid, parts, weights, split_index, means=None) -> dict[str, torch.Tensor]:
    """The original's per-step statistics: disagree, current_win, avg_weights (SPEC §3.1), over the
    whole global batch (summed over the ranks under torchrun), plus the given ``means``."""
    pseudo = valid & ~labelled_mask(labels, split_index)
    disagree = pseudo & ~parts["agree"]
    totals = global_stats({
        "disagree": disagree.sum().float(),
        "current_win": (disagree & parts["current_win"]).sum().float(),
        # masked mean without boolean indexing: no device→host sync in the training step
        "weights_sum": (weights.float() * valid).sum(),
        "valid": valid.sum(),
    }, means)
    weights_sum, count = totals.pop("weights_sum"), totals.pop("valid")
    return {**totals, "avg_weights": weights_sum / count.clamp_min(1)}


class DynamicMutualLoss(nn.Module):
    """SPEC §3.1: loss = Σ w·ℓ / M with M the number of non-ignored pixels/samples of the whole batch.

    Without a split or with γ1 = γ2 = 0, loss = Σℓ/M. Labelled samples (index ≥ ``split_index``)
    get w = 1. Note the normaliser is the pixel count, not Σw (SPEC §11.16).
    """

    def __init__(self, gamma1: float = 0.0, gamma2: float = 0.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.gamma1, self.gamma2, self.ignore_index = float(gamma1), float(gamma2), ignore_index

    def pseudo_weights(self, probs, labels, confidences):
        return dynamic_weights(probs, labels, confidences, self.gamma1, self.gamma2, self.ignore_index)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, split_index: int | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels, confidences = split_targets(targets, self.ignore_index)
        inputs = match_size(inputs, labels)
        ce = F.cross_entropy(full_precision(inputs), labels, ignore_index=self.ignore_index, reduction="none")
        valid = labels != self.ignore_index
        count = distributed.mean_denominator(valid.sum())  # M of the whole global batch (/ world under DDP)
        raw_sum = ce.sum()
        if split_index is None or (self.gamma1 == 0 and self.gamma2 == 0 and type(self) is DynamicMutualLoss):
            loss = raw_sum / count
            return loss, {k: v.detach() for k, v in global_stats({}, {"loss": loss}).items()}
        probs = full_precision(inputs.detach()).softmax(dim=1)
        weights, parts = self.pseudo_weights(probs, labels, confidences)
        labelled = labelled_mask(labels, split_index)
        ce, weights = self.adjust(inputs, labels, confidences, ce, weights, parts, ~labelled)
        weights = torch.where(labelled, torch.ones_like(weights), weights)
        loss = (ce * weights).sum() / count
        stats = _stats(labels, valid, parts, weights, split_index, means={"loss": raw_sum / count})
        return loss, {k: v.detach() for k, v in stats.items()}

    def adjust(self, inputs, labels, confidences, ce, weights, parts, pseudo):
        """Hook for ablations that change the per-pixel loss or weights of the pseudo part
        (``pseudo`` mask); DMT changes nothing."""
        return ce, weights


class NaiveDynamicLoss(DynamicMutualLoss):
    """SPEC §3.2 naive ablation: w = p_y^γ (γ = 5 in the scripts) on every pseudo pixel."""

    def __init__(self, gamma: float = 5.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(gamma, gamma, ignore_index)

    def pseudo_weights(self, probs, labels, confidences):
        _, parts = dynamic_weights(probs, labels, confidences, self.gamma1, self.gamma2, self.ignore_index)
        return parts["p_y"].pow(self.gamma1), parts


class FlipDynamicLoss(DynamicMutualLoss):
    """SPEC §3.2 flip ablation: where d ≠ y, q > c and y ≠ 255 the target becomes d with weight
    (1 − c)^γ2, and the CE is recomputed with the flipped targets; elsewhere as DMT."""

    def adjust(self, inputs, labels, confidences, ce, weights, parts, pseudo):
        flip = parts["current_win"] & (labels != self.ignore_index) & pseudo
        flipped = torch.where(flip, parts["decision"], labels)
        ce = F.cross_entropy(full_precision(inputs), flipped, ignore_index=self.ignore_index, reduction="none")
        weights = torch.where(flip, (1 - confidences).clamp_min(0).pow(self.gamma2), weights)
        return ce, weights


class OnlineLoss(nn.Module):
    """SPEC §3.2 online ablation: pseudo samples are trained on the current prediction, ignored where
    max p ≤ ``threshold``; loss = mean CE over the non-ignored pixels of the combined batch."""

    def __init__(self, threshold: float = 0.9, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.threshold, self.ignore_index = threshold, ignore_index

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, split_index: int | None = None):
        labels, _ = split_targets(targets, self.ignore_index)
        inputs = match_size(inputs, labels)
        if split_index:
            q, decision = full_precision(inputs[:split_index].detach()).softmax(dim=1).max(dim=1)
            online = decision.masked_fill(q <= self.threshold, self.ignore_index)
            labels = torch.cat([online, labels[split_index:]])
        ce = F.cross_entropy(full_precision(inputs), labels, ignore_index=self.ignore_index, reduction="none")
        count = distributed.mean_denominator((labels != self.ignore_index).sum())
        loss = ce.sum() / count
        kept = (labels[:split_index or 0] != self.ignore_index).sum().float()
        stats = global_stats({"online_kept": kept}, {"loss": loss})
        return loss, {k: v.detach() for k, v in stats.items()}


def build_loss(name: str, gamma1: float = 0.0, gamma2: float = 0.0, online_threshold: float = 0.9,
               ignore_index: int = IGNORE_INDEX) -> nn.Module:
    """``dmt`` | ``naive`` (γ = gamma2, the scripts use 5) | ``flip`` | ``online``."""
    if name == "dmt":
        return DynamicMutualLoss(gamma1, gamma2, ignore_index)
    if name == "naive":
        return NaiveDynamicLoss(gamma2 or 5.0, ignore_index)
    if name == "flip":
        return FlipDynamicLoss(gamma1, gamma2, ignore_index)
    if name == "online":
        return OnlineLoss(online_threshold, ignore_index)
    raise ValueError(f"unknown loss {name!r}")


# ---------------------------------------------------------------------------------- classification
def gamma_ramp(gamma0: float, step: int, total: int, fix_first_step: bool = True) -> float:
    """Sigmoid-ascending ramp γ = γ⁰·exp(−5(1 − t/T)²) of SPEC §3.3.

    The original's counter made iteration 1 use the full γ⁰ and iteration n ≥ 2 use t = n
    (SPEC §11.6); ``fix_first_step`` (the default) uses t = n from iteration 1 on.
    """
    t = step if (fix_first_step or step > 1) else total
    t = min(max(t, 0), total)
    return gamma0 * math.exp(-5.0 * (1.0 - t / total) ** 2)


def classification_weights(probs: torch.Tensor, targets: torch.Tensor, split_index: int, gamma1: float,
                           gamma2: float, labeled_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SPEC §3.3 step 1: per-sample DMT weights from the current net's softmax on the un-mixed batch.

    ``targets``: ``(N, 2)`` label + confidence (labelled samples: confidence 1). Labelled samples
    get ``labeled_weight``. With γ1 = γ2 = 0 (curriculum labelling) every pseudo weight is 1.
    """
    labels, confidences = split_targets(targets)
    weights, parts = dynamic_weights(probs, labels, confidences, gamma1, gamma2)
    if gamma1 == 0 and gamma2 == 0:
        weights = torch.ones_like(weights)
    weights = torch.where(labelled_mask(labels, split_index), torch.full_like(weights, labeled_weight), weights)
    return weights, _stats(labels, torch.ones_like(labels, dtype=torch.bool), parts, weights, split_index)


def batch_mean(per_sample: torch.Tensor, global_size: int | None = None) -> torch.Tensor:
    """(1/N) Σ over the whole global batch of N samples, in the units DDP averages in: in a single
    process (or without ``global_size``) the plain mean; under torchrun this rank's sum divided by
    N / world, so that the ranks' average is the global mean (and so is the gradient)."""
    world = distributed.info().world_size
    if world == 1 or global_size is None:
        return per_sample.mean()
    return per_sample.sum() / (max(global_size, 1) / world)


def mixup_weighted_ce(logits: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam,
                      weights: torch.Tensor | None = None, global_size: int | None = None) -> torch.Tensor:
    """SPEC §3.3 step 3: (1/N) Σ w̃_n [λ·CE(f(x̃_n), y_n) + (1−λ)·CE(f(x̃_n), y_π(n))], hard labels.

    ``weights`` None means all 1 (the supervised mixup baseline of ``main_fs``). Under torchrun the
    rows are this rank's share and ``global_size`` is N (:func:`batch_mean`).
    """
    logits = full_precision(logits)
    per_sample = lam * F.cross_entropy(logits, labels_a, reduction="none") \
        + (1 - lam) * F.cross_entropy(logits, labels_b, reduction="none")
    if weights is not None:
        per_sample = per_sample * weights
    return batch_mean(per_sample, global_size)
