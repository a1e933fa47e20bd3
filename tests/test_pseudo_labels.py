"""CBC thresholds (docs/method.md §2.1) and the global curriculum threshold (§2.2) against numpy references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from utils.pseudo_labels import (CBCSampler, class_balanced_thresholds, global_confidence_threshold, sample_pixels,
                                 threshold_labels)


def select_confident(conf: torch.Tensor, r: float) -> torch.Tensor:
    """The images the classification curriculum keeps: strictly above k (as classification.labeling)."""
    return conf > global_confidence_threshold(conf, r)


def numpy_cbc(conf: np.ndarray, lab: np.ndarray, num_classes: int, ratio: float) -> np.ndarray:
    """Straight from docs/method.md §2.1 step 5, one class at a time (missing classes → 1e-5 at any ratio)."""
    out = np.zeros(num_classes, dtype=np.float32)
    for c in range(num_classes):
        p = np.sort(conf[lab == c])
        n = len(p)
        if ratio >= 1:
            out[c] = p[0] if n else 1e-5
        elif n * ratio < 1:
            out[c] = 1e-5
        else:
            out[c] = p[n - int(n * ratio) - 1]
    return out


@pytest.mark.parametrize("ratio", [0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 0.001, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thresholds_match_numpy_reference(ratio, seed):
    rng = np.random.default_rng(seed)
    n = 5000
    lab = rng.choice(7, size=n, p=[0.4, 0.3, 0.2, 0.05, 0.04, 0.01, 0.0]).astype(np.int64)  # class 6 absent
    conf = rng.uniform(1 / 7, 1, size=n).astype(np.float32)
    conf[:50] = conf[50:100]  # ties
    got = class_balanced_thresholds(torch.from_numpy(conf), torch.from_numpy(lab), 7, ratio)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), numpy_cbc(conf, lab, 7, ratio))


def test_threshold_edge_cases_by_hand():
    conf = torch.tensor([0.9, 0.5, 0.7, 0.3, 0.6, 0.95])
    lab = torch.tensor([0, 0, 0, 0, 1, 2])
    # class 0 sorted: 0.3 0.5 0.7 0.9, n=4. r=0.5: ⌊2⌋ = 2 → P[4-2-1] = P[1] = 0.5
    t = class_balanced_thresholds(conf, lab, 4, 0.5)
    assert t[0] == pytest.approx(0.5)
    assert t[1] == pytest.approx(1e-5) and t[2] == pytest.approx(1e-5)  # n·r = 0.5 < 1
    assert t[3] == pytest.approx(1e-5)  # absent class
    t1 = class_balanced_thresholds(conf, lab, 4, 1.0)
    assert t1.tolist()[:3] == pytest.approx([0.3, 0.6, 0.95]) and t1[3] == pytest.approx(1e-5)  # no crash
    t25 = class_balanced_thresholds(conf, lab, 4, 0.25)  # n·r = 1 → P[4-1-1] = 0.7
    assert t25[0] == pytest.approx(0.7)


def test_sampling_every_16th_pixel_row_major_per_image():
    conf = torch.arange(2 * 5 * 7, dtype=torch.float32).view(2, 5, 7)
    lab = torch.zeros(2, 5, 7, dtype=torch.long)
    c, _ = sample_pixels(conf, lab, 16)
    expected = [v for img in range(2) for v in range(img * 35, img * 35 + 35, 16)]  # 0,16,32 per image
    assert c.tolist() == expected


def test_sampler_and_apply_thresholds_strict():
    probs = torch.tensor([[[0.6, 0.2], [0.5, 0.9]], [[0.4, 0.8], [0.5, 0.1]]])  # C=2, 2×2
    sampler = CBCSampler(2, stride=1)
    conf, lab = probs.max(0)
    sampler.add(conf, lab)
    assert sampler.missing_classes() == []
    t = sampler.thresholds(1.0)  # class minima: class 0 {0.6, 0.5, 0.9} → 0.5; class 1 {0.8} → 0.8
    assert t.tolist() == pytest.approx([0.5, 0.8])
    confidence, argmax = probs.max(dim=0)
    labels = threshold_labels(confidence, argmax, torch.tensor([0.6, 0.8]))
    # 0.5 < 0.6 → ignored (strict: 0.6 itself is kept); 0.8 at class 1 is kept
    assert labels.tolist() == [[0, 1], [255, 0]]
    assert confidence.flatten().tolist() == pytest.approx([0.6, 0.8, 0.5, 0.9])
    assert (labels != 255).float().mean() == pytest.approx(0.75)
    assert CBCSampler(3).__class__ is CBCSampler


def test_global_threshold_keeps_r_n_minus_2():
    n = 1000
    conf = torch.from_numpy(np.random.default_rng(0).permutation(np.linspace(0.1, 1.0, n)).astype(np.float32))
    for r in (0.2, 0.4, 0.6, 0.8):
        k = global_confidence_threshold(conf, r)
        ascending = np.sort(conf.numpy())
        assert float(k) == ascending[int(-r * n + 1)]
        assert int(select_confident(conf, r).sum()) == round(r * n) - 2
    assert float(global_confidence_threshold(conf, 1.0)) == 0.0
    assert int(select_confident(conf, 1.0).sum()) == n
    # Ties at the threshold are dropped (strict >), docs/method.md §11.11.
    saturated = torch.ones(10)
    assert int(select_confident(saturated, 0.5).sum()) == 0


def test_paper_counts_for_48800_images():
    conf = torch.from_numpy(np.random.default_rng(1).permutation(48800).astype(np.float32) / 48800 + 0.01)
    kept = [int(select_confident(conf, r).sum()) for r in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert kept == [9758, 19518, 29278, 39038, 48800]
