"""DMT's dynamic mutual loss (docs/method.md §3.1), its ablations (§3.2) and the classification mixup loss (§3.3).

:func:`dynamic_weights` is the one statement of the paper's agree/disagree rule; :func:`dmt_loss`
(variants ``dmt``, ``naive``, ``flip``) and :func:`online_loss` build the segmentation losses on
it, :func:`supervised_loss` is plain cross-entropy, :func:`classification_weights` gives the
classification weights. Shapes: logits ``(N, C)`` (classification) or ``(N, C, H, W)``
(segmentation); ``labels`` int64 ``(N,)`` / ``(N, H, W)``, ``confidences`` float of the same shape
(1 for labelled samples). A batch holds the ``num_pseudo`` pseudo-labelled samples first, then the
labelled ones.

Every mean is over the **whole global batch**: under torchrun each rank passes its share and the
normaliser M is the count over all ranks (:func:`mean_denominator`), so DDP's
averaged gradient is one process's. Statistics come back as 0-d tensors on the logits' device (no
host sync), over the global batch: ``disagree``, ``current_win``, ``avg_weights`` and ``loss``
(= Σℓ/M, the unweighted loss), as in the original, and the weight diagnostics of
:func:`weight_stats` (a histogram of the pseudo weights, their mean on agreeing / disagreeing
pixels, the fraction set to 0). The collectives of a training step are here (:func:`mean_denominator`,
:func:`sum_over_ranks`, torch.distributed directly), and so is mixup (:func:`sample_lambda`, :func:`mix`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

IGNORE_INDEX = 255


def world_size() -> int:
    """The number of torchrun processes (1 without torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mean_denominator(local_count: torch.Tensor) -> torch.Tensor:
    """The M of a mean Σ/M over the **whole global batch**, for a loss whose gradients DDP averages.

    Single process: ``local_count`` (clamped to ≥ 1) as a float. Under torchrun: the count summed
    over the ranks (an all_reduce on the device, no host sync), divided by the world size, so that
    each rank's Σ_rank/M·world averaged by DDP is Σ_all/M: one process's gradient on the same
    global batch (docs/method.md §3.1)."""
    if world_size() == 1:
        return local_count.clamp_min(1).float()
    total = local_count.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.clamp_min(1).float() / dist.get_world_size()


def sum_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors (0-d or 1-d, e.g. a histogram's counts) summed over the ranks in one all_reduce (as
    they are in a single process)."""
    if world_size() == 1 or not values:
        return values
    keys = list(values)
    flat = [values[k].detach().float().reshape(-1) for k in keys]
    packed = torch.cat(flat)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    parts = packed.split([f.numel() for f in flat])
    return {k: part.reshape(values[k].shape) for k, part in zip(keys, parts)}


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """Half-precision (autocast) logits in float32; float32/float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def match_size(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Segmentation logits upsampled bilinearly (align_corners=True) to the label size (docs/method.md §3.1)."""
    if logits.dim() == 4 and logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=True)
    return logits


def dynamic_weights(probs: torch.Tensor, labels: torch.Tensor, confidences: torch.Tensor,
                    gamma1: float, gamma2: float, ignore_index: int = IGNORE_INDEX
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The agree/disagree weighting of docs/method.md §3.1, per sample/pixel, before the labelled override.

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


def labelled_mask(labels: torch.Tensor, num_pseudo: int) -> torch.Tensor:
    """True on the samples from ``num_pseudo`` on (the labelled part of the batch)."""
    mask = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
    mask[num_pseudo:] = True
    return mask.view(-1, *([1] * (labels.dim() - 1))).expand_as(labels)


WEIGHT_HIST_BINS = 20  # equal-width bins over [0, 1] of the ``weights_hist`` statistic


def weight_stats(weights: torch.Tensor, agree: torch.Tensor, pseudo: torch.Tensor,
                 bins: int = WEIGHT_HIST_BINS) -> dict[str, torch.Tensor]:
    """What the dynamic weights do to the pseudo-labelled pixels/samples (``pseudo``: bool mask of
    the non-ignored pseudo part; ``agree``: the current model's argmax equals the teacher's label).

    * ``weights_hist``: a 1-D tensor of ``bins`` counts of the pseudo weights in equal-width bins over
      [0, 1] (bin b holds b/B ≤ w < (b+1)/B; w = 1 goes to the last bin) — summed, not averaged,
      over a logging interval (:class:`utils.trainer.Trainer` turns 1-D stats into histograms);
    * ``weight_agree`` / ``weight_disagree``: mean weight over the agreeing / disagreeing pseudo pixels
      (0 when there are none);
    * ``weight_zero_frac``: the fraction of pseudo pixels whose weight is exactly 0 (docs/method.md §3.1: the
      current model is surer of another class than the teacher was).

    All on the device, without boolean indexing (no device→host sync in the training step).
    """
    return weight_ratios(weight_sums(weights, agree, pseudo, bins))


def weight_sums(weights: torch.Tensor, agree: torch.Tensor, pseudo: torch.Tensor,
                bins: int = WEIGHT_HIST_BINS) -> dict[str, torch.Tensor]:
    """The sums behind :func:`weight_stats` (they add up over torchrun ranks)."""
    w = weights.detach().float()
    pseudo_f = pseudo.float()
    agree_f = (agree & pseudo).float()
    disagree_f = (~agree & pseudo).float()
    index = (torch.nan_to_num(w, nan=0.0).clamp(0, 1) * bins).long().clamp_max(bins - 1).reshape(-1)
    hist = torch.zeros(bins, dtype=torch.float32, device=w.device).scatter_add_(0, index, pseudo_f.reshape(-1))
    return {"weights_hist": hist, "w_agree": (w * agree_f).sum(), "n_agree": agree_f.sum(),
            "w_disagree": (w * disagree_f).sum(), "n_disagree": disagree_f.sum(),
            "n_zero": ((w == 0).float() * pseudo_f).sum(), "n_pseudo": pseudo_f.sum()}


def weight_ratios(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`weight_sums` (popped from ``sums``) → the ``weight_stats`` entries."""
    return {"weights_hist": sums.pop("weights_hist"),
            "weight_agree": sums.pop("w_agree") / sums.pop("n_agree").clamp_min(1),
            "weight_disagree": sums.pop("w_disagree") / sums.pop("n_disagree").clamp_min(1),
            "weight_zero_frac": sums.pop("n_zero") / sums.pop("n_pseudo").clamp_min(1)}


def global_stats(sums: dict[str, torch.Tensor], means: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
    """Per-step statistics of the whole global batch, in one all_reduce under torchrun (as they are
    in a single process): ``sums`` are added over the ranks; ``means`` are per-rank values already
    divided by :func:`mean_denominator` (global count / world), so their average over the ranks
    is the global mean."""
    world = world_size()
    values = {**sums, **{k: (v / world if world > 1 else v) for k, v in (means or {}).items()}}
    return sum_over_ranks(values)


def _stats(labels, valid, parts, weights, num_pseudo, means=None) -> dict[str, torch.Tensor]:
    """The original's per-step statistics, computed here for every loss: disagree, current_win,
    avg_weights (docs/method.md §3.1), over the whole global batch (summed over the ranks under torchrun),
    plus the given ``means``."""
    pseudo = valid & ~labelled_mask(labels, num_pseudo)
    disagree = pseudo & ~parts["agree"]
    totals = global_stats({
        "disagree": disagree.sum().float(),
        "current_win": (disagree & parts["current_win"]).sum().float(),
        # masked mean without boolean indexing: no device→host sync in the training step
        "weights_sum": (weights.float() * valid).sum(),
        "valid": valid.sum(),
        **weight_sums(weights, parts["agree"], pseudo),
    }, means)
    weights_sum, count = totals.pop("weights_sum"), totals.pop("valid")
    weights = weight_ratios(totals)
    return {**totals, "avg_weights": weights_sum / count.clamp_min(1), **weights}


def _detached(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in stats.items()}


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Plain cross-entropy Σℓ/M, M the global batch's non-ignored pixels (supervised training)."""
    logits = match_size(logits, labels)
    ce = F.cross_entropy(full_precision(logits), labels, ignore_index=ignore_index, reduction="none")
    loss = ce.sum() / mean_denominator((labels != ignore_index).sum())
    return loss, _detached(global_stats({}, {"loss": loss}))


VARIANTS = ("dmt", "naive", "flip")


def dmt_loss(logits: torch.Tensor, labels: torch.Tensor, confidences: torch.Tensor, num_pseudo: int,
             gamma1: float, gamma2: float, variant: str = "dmt", ignore_index: int = IGNORE_INDEX
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """docs/method.md §3.1: loss = Σ w·ℓ / M over the batch [pseudo; labelled], M its non-ignored pixel count
    (not Σw, docs/method.md §11.16); w from :func:`dynamic_weights` on the ``num_pseudo`` pseudo samples, 1 on
    the labelled ones. ``variant`` (docs/method.md §3.2):

    * ``dmt``: w as the rule says; with γ1 = γ2 = 0 every weight is 1 (self-training, CBST);
    * ``naive``: w = p_y^γ2 on every pseudo pixel;
    * ``flip``: where the current model wins (d ≠ y, q > c, y ≠ 255) the target becomes d, with
      w = (1 − c)^γ2; elsewhere as dmt.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown DMT loss variant {variant!r}")
    logits = match_size(logits, labels)
    ce = F.cross_entropy(full_precision(logits), labels, ignore_index=ignore_index, reduction="none")
    valid = labels != ignore_index
    count = mean_denominator(valid.sum())  # M of the whole global batch (/ world under DDP)
    unweighted = ce.sum() / count
    if variant == "dmt" and gamma1 == 0 and gamma2 == 0:
        return unweighted, _detached(global_stats({}, {"loss": unweighted}))
    probs = full_precision(logits.detach()).softmax(dim=1)
    weights, parts = dynamic_weights(probs, labels, confidences, gamma1, gamma2, ignore_index)
    pseudo = ~labelled_mask(labels, num_pseudo)
    if variant == "naive":
        weights = parts["p_y"].pow(gamma2)
    elif variant == "flip":
        flip = parts["current_win"] & valid & pseudo
        ce = F.cross_entropy(full_precision(logits), torch.where(flip, parts["decision"], labels),
                             ignore_index=ignore_index, reduction="none")
        weights = torch.where(flip, (1 - confidences).clamp_min(0).pow(gamma2), weights)
    weights = torch.where(pseudo, weights, torch.ones_like(weights))
    loss = (ce * weights).sum() / count
    return loss, _detached(_stats(labels, valid, parts, weights, num_pseudo, means={"loss": unweighted}))


def online_loss(logits: torch.Tensor, labelled_labels: torch.Tensor, num_pseudo: int, threshold: float = 0.9,
                ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """docs/method.md §3.2 online ablation: the ``num_pseudo`` unlabelled samples are trained on the current
    prediction d, ignored where max p ≤ ``threshold``; the rest on ``labelled_labels`` (labels of
    the labelled samples only: no label of an unlabelled image is read). Σℓ/M over the batch."""
    logits = match_size(logits, labelled_labels)
    q, decision = full_precision(logits[:num_pseudo].detach()).softmax(dim=1).max(dim=1)
    online = decision.masked_fill(q <= threshold, ignore_index)
    labels = torch.cat([online, labelled_labels])
    ce = F.cross_entropy(full_precision(logits), labels, ignore_index=ignore_index, reduction="none")
    loss = ce.sum() / mean_denominator((labels != ignore_index).sum())
    kept = (online != ignore_index).sum().float()
    return loss, _detached(global_stats({"online_kept": kept}, {"loss": loss}))


# ---------------------------------------------------------------------------------- classification
def gamma_ramp(gamma0: float, step: int, total: int, fix_first_step: bool = True) -> float:
    """Sigmoid-ascending ramp γ = γ⁰·exp(−5(1 − t/T)²) of docs/method.md §3.3.

    The original's counter made iteration 1 use the full γ⁰ and iteration n ≥ 2 use t = n
    (docs/method.md §11.6); ``fix_first_step`` (the default) uses t = n from iteration 1 on.
    """
    t = step if (fix_first_step or step > 1) else total
    t = min(max(t, 0), total)
    return gamma0 * math.exp(-5.0 * (1.0 - t / total) ** 2)


def classification_weights(probs: torch.Tensor, labels: torch.Tensor, confidences: torch.Tensor, num_pseudo: int,
                           gamma1: float, gamma2: float, labeled_weight: float = 1.0
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """docs/method.md §3.3 step 1: per-sample DMT weights from the current net's softmax on the un-mixed batch.

    ``labels`` (N,) hard labels, ``confidences`` (N,) the teacher's (1 for labelled samples).
    Labelled samples get ``labeled_weight``. With γ1 = γ2 = 0 (curriculum labelling) every pseudo
    weight is 1.
    """
    weights, parts = dynamic_weights(probs, labels, confidences, gamma1, gamma2)
    if gamma1 == 0 and gamma2 == 0:
        weights = torch.ones_like(weights)
    weights = torch.where(labelled_mask(labels, num_pseudo), torch.full_like(weights, labeled_weight), weights)
    return weights, _stats(labels, torch.ones_like(labels, dtype=torch.bool), parts, weights, num_pseudo)


def batch_mean(per_sample: torch.Tensor, global_size: int | None = None) -> torch.Tensor:
    """(1/N) Σ over the whole global batch of N samples, in the units DDP averages in: in a single
    process (or without ``global_size``) the plain mean; under torchrun this rank's sum divided by
    N / world, so that the ranks' average is the global mean (and so is the gradient)."""
    world = world_size()
    if world == 1 or global_size is None:
        return per_sample.mean()
    return per_sample.sum() / (max(global_size, 1) / world)


def mixup_weighted_ce(logits: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam,
                      weights: torch.Tensor | None = None, global_size: int | None = None) -> torch.Tensor:
    """docs/method.md §3.3 step 3: (1/N) Σ w̃_n [λ·CE(f(x̃_n), y_n) + (1−λ)·CE(f(x̃_n), y_π(n))], hard labels.

    ``weights`` None means all 1 (the supervised mixup baseline of ``main_fs``). Under torchrun the
    rows are this rank's share and ``global_size`` is N (:func:`batch_mean`).
    """
    logits = full_precision(logits)
    per_sample = lam * F.cross_entropy(logits, labels_a, reduction="none") \
        + (1 - lam) * F.cross_entropy(logits, labels_b, reduction="none")
    if weights is not None:
        per_sample = per_sample * weights
    return batch_mean(per_sample, global_size)


def sample_lambda(alpha: float, max_lambda: bool) -> float:
    """Mixup's λ ~ Beta(α, α) with numpy's global RNG (as the original); ``max_lambda`` → max(λ, 1 − λ)."""
    lam = float(np.random.beta(alpha, alpha))
    return max(lam, 1.0 - lam) if max_lambda else lam


def mix(x: torch.Tensor, lam, permutation: torch.Tensor) -> torch.Tensor:
    """λ·x + (1 − λ)·x[π] (docs/method.md §3.3: one permutation of the whole batch mixes the inputs
    and, for DMT, the per-sample weights w̃ alike)."""
    return lam * x + (1.0 - lam) * x[permutation]
