"""DMT losses against a plain per-element reference written straight from docs/method.md §3.1–3.3."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.losses import (classification_weights, dmt_loss, gamma_ramp, mixup_weighted_ce, online_loss,
                          supervised_loss)

IGN = 255


def reference_dmt(logits, labels, confs, split, g1, g2, mode="dmt"):
    """Per-pixel loops over numpy arrays: docs/method.md §3.1 (dmt), §3.2 (naive, flip). logits N×C×P."""
    n, c, p = logits.shape
    total, raw, m = 0.0, 0.0, 0
    disagree = win = 0
    weights = []
    for i in range(n):
        for j in range(p):
            y = int(labels[i, j])
            z = logits[i, :, j].astype(np.float64)
            prob = np.exp(z - z.max()); prob /= prob.sum()
            if y == IGN:
                continue
            m += 1
            ce = -math.log(prob[y])
            raw += ce
            d, q, conf = int(prob.argmax()), float(prob.max()), float(confs[i, j])
            if split is None or (mode == "dmt" and g1 == 0 and g2 == 0):
                total += ce
                continue
            if i >= split:
                w = 1.0
            elif mode == "naive":
                w = prob[y] ** g2
            elif d == y:
                w = prob[y] ** g1
            elif q > conf:
                if mode == "flip":
                    w, ce = (1 - conf) ** g2, -math.log(prob[d])
                else:
                    w = 0.0
            else:
                w = prob[y] ** g2
            if i < split and d != y:
                disagree += 1
                win += q > conf
            weights.append(w)
            total += w * ce
    stats = {"disagree": disagree, "current_win": win, "avg_weights": float(np.mean(weights)) if weights else 0.0,
             "loss": raw / m}
    return total / m, stats


def random_case(seed, n=4, c=5, h=3, w=3, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, c, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < ignore_frac] = IGN
    confs = torch.rand(n, h, w, generator=g, dtype=torch.float64)
    return logits, labels, confs


@pytest.mark.parametrize("split", [0, 1, 2, 4])
@pytest.mark.parametrize("gammas", [(5.0, 5.0), (3.0, 1.5), (0.0, 2.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_dmt_loss_matches_reference_segmentation(split, gammas, seed):
    logits, labels, confs = random_case(seed)
    loss, stats = dmt_loss(logits, labels, confs, split, *gammas)
    ref, ref_stats = reference_dmt(logits.flatten(2).numpy(), labels.flatten(1).numpy(), confs.flatten(1).numpy(),
                                   split, *gammas)
    assert float(loss) == pytest.approx(ref, abs=1e-6)
    for key in ref_stats:
        assert float(stats[key]) == pytest.approx(ref_stats[key], abs=1e-6), key


def test_dmt_loss_classification_shape_and_hard_labels():
    logits, labels, confs = random_case(3, n=6, h=1, w=1, ignore_frac=0)
    logits, labels, confs = logits[..., 0, 0], labels[..., 0, 0], confs[..., 0, 0]
    loss, _ = dmt_loss(logits, labels, confs, 3, 4, 4)
    ref, _ = reference_dmt(logits[..., None].numpy(), labels[:, None].numpy(), confs[:, None].numpy(), 3, 4, 4)
    assert float(loss) == pytest.approx(ref, abs=1e-6)
    # supervised: plain mean cross-entropy
    hard, stats = supervised_loss(logits, labels)
    assert float(hard) == pytest.approx(float(F.cross_entropy(logits, labels)), abs=1e-6)
    assert set(stats) == {"loss"} and float(stats["loss"]) == pytest.approx(float(hard))


def test_no_split_or_zero_gamma_is_sum_over_pixel_count():
    logits, labels, confs = random_case(5)
    expected = F.cross_entropy(logits, labels, ignore_index=IGN, reduction="sum") / (labels != IGN).sum()
    assert float(supervised_loss(logits, labels)[0]) == pytest.approx(float(expected), abs=1e-6)
    loss, stats = dmt_loss(logits, labels, confs, 2, 0, 0)  # self-training (CBST): every weight 1
    assert float(loss) == pytest.approx(float(expected), abs=1e-6) and set(stats) == {"loss"}


def test_three_by_three_hand_example():
    """One 2-class 1×3 pseudo image, every case of the rule, values by hand."""
    # pixel 0: agree (p=0.8 on class 0, label 0); pixel 1: disagree, current surer (q=0.9 > c=0.5);
    # pixel 2: disagree, teacher surer (q=0.6 ≤ c=0.7) → w = p_y^γ2 = 0.4^2.
    p = torch.tensor([[0.8, 0.1, 0.6], [0.2, 0.9, 0.4]], dtype=torch.float64)
    logits = p.log().view(1, 2, 1, 3)
    labels = torch.tensor([[[0, 0, 1]]])
    confidences = torch.tensor([[[1.0, 0.5, 0.7]]], dtype=torch.float64)
    loss, stats = dmt_loss(logits, labels, confidences, 1, gamma1=1.0, gamma2=2.0)
    w = [0.8, 0.0, 0.4 ** 2]
    ce = [-math.log(0.8), -math.log(0.1), -math.log(0.4)]
    assert float(loss) == pytest.approx(sum(a * b for a, b in zip(w, ce)) / 3, abs=1e-9)
    assert float(stats["disagree"]) == 2 and float(stats["current_win"]) == 1
    assert float(stats["avg_weights"]) == pytest.approx(sum(w) / 3)


def test_upsamples_stride8_logits_like_the_original():
    logits, labels, confs = random_case(7, h=9, w=9)
    small = logits[..., ::4, ::4].contiguous()  # 3×3
    up = F.interpolate(small, size=(9, 9), mode="bilinear", align_corners=True)
    a = dmt_loss(small, labels, confs, 2, 5, 5)[0]
    b = dmt_loss(up, labels, confs, 2, 5, 5)[0]
    assert float(a) == pytest.approx(float(b), abs=1e-9)


@pytest.mark.parametrize("split", [1, 3])
def test_naive_and_flip_match_reference(split):
    logits, labels, confs = random_case(11)
    for mode, gammas in (("naive", (0.0, 3.0)), ("flip", (5.0, 2.0))):
        loss, stats = dmt_loss(logits, labels, confs, split, *gammas, variant=mode)
        ref, ref_stats = reference_dmt(logits.flatten(2).numpy(), labels.flatten(1).numpy(),
                                       confs.flatten(1).numpy(), split, *gammas, mode=mode)
        assert float(loss) == pytest.approx(ref, abs=1e-6), mode
        for key in ref_stats:
            assert float(stats[key]) == pytest.approx(ref_stats[key], abs=1e-6), (mode, key)
    with pytest.raises(ValueError):
        dmt_loss(logits, labels, confs, split, 5, 5, variant="nope")


def test_online_loss_thresholds_current_prediction():
    logits = torch.tensor([[[[4.0, 0.0]], [[0.0, 0.1]]], [[[0.0, 3.0]], [[2.0, 0.0]]]], dtype=torch.float64)
    labelled = torch.tensor([[[1, 0]]])  # the labelled sample's labels only: sample 0 is unlabelled
    loss, stats = online_loss(logits, labelled, 1, threshold=0.9)
    # pseudo sample: pixel 0 p(class 0) = e^4/(e^4+1) ≈ 0.982 > 0.9 kept as class 0; pixel 1 max ≈ 0.525 ignored.
    p0 = math.exp(4) / (math.exp(4) + 1)
    ce = [-math.log(p0), -math.log(math.exp(2) / (math.exp(2) + 1)), -math.log(math.exp(3) / (math.exp(3) + 1))]
    assert float(loss) == pytest.approx(sum(ce) / 3, abs=1e-9)
    assert float(stats["online_kept"]) == 1


def test_gamma_ramp_values_and_original_off_by_one():
    assert gamma_ramp(4.0, 100, 100) == pytest.approx(4.0)
    assert gamma_ramp(4.0, 50, 100) == pytest.approx(4.0 * math.exp(-5 * 0.25))
    assert gamma_ramp(4.0, 1, 150) == pytest.approx(4.0 * math.exp(-5 * (1 - 1 / 150) ** 2))
    assert gamma_ramp(4.0, 1, 150, fix_first_step=False) == pytest.approx(4.0)  # docs/method.md §11.6
    assert gamma_ramp(4.0, 2, 150, fix_first_step=False) == pytest.approx(4.0 * math.exp(-5 * (1 - 2 / 150) ** 2))


def test_classification_weights_and_mixup_loss():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    labels, confidences = torch.tensor([0, 0, 0, 2]), torch.tensor([0.9, 0.5, 0.6, 1.0])
    w, stats = classification_weights(probs, labels, confidences, 3, gamma1=2.0, gamma2=3.0, labeled_weight=0.5)
    # agree → 0.7²; current surer (0.8 > 0.5) → 0; teacher surer (0.4 ≤ 0.6) → 0.3³; labelled → 0.5
    assert torch.allclose(w, torch.tensor([0.49, 0.0, 0.027, 0.5]))
    assert float(stats["disagree"]) == 2 and float(stats["current_win"]) == 1
    w0, _ = classification_weights(probs, labels, confidences, 3, 0.0, 0.0)
    assert torch.equal(w0, torch.ones(4))  # curriculum labelling: all weights 1 (docs/method.md §3.3)
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    ya, yb = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
    lam = 0.7
    logp = logits.log_softmax(1)
    expected = sum(float(w[i]) * (lam * -logp[i, ya[i]] + (1 - lam) * -logp[i, yb[i]]) for i in range(4)) / 4
    assert float(mixup_weighted_ce(logits, ya, yb, lam, w)) == pytest.approx(float(expected), abs=1e-6)
