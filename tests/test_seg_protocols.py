"""segmentation/main.py --state 3 and the test protocols of docs/method.md §8: whole image, sliding
window and multi-scale + flip, end to end and on hand-made models whose results are known."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from segmentation.evaluation import (Protocol, probabilities, probabilities_msf, probabilities_sliding,
                                     probabilities_whole, window_starts)
from segmentation.models import deeplab_v2
from tests.helpers import log_lines
from tests.test_seg_main import common, labeller, quiet, run, voc  # noqa: F401 (fixtures)


def test_state_3_protocols_agree_where_they_must(voc, labeller, tmp_path, capsys):
    results = {}
    for name, extra in {"whole": [], "sliding-one-window": ["--eval-protocol", "sliding", "--eval-crop", "41", "41"],
                        "msf-1-noflip": ["--eval-protocol", "msf", "--eval-scales", "1.0", "--eval-no-flip"],
                        "msf": ["--eval-protocol", "msf", "--eval-scales", "0.75", "1.0"],
                        "sliding": ["--eval-protocol", "sliding", "--eval-crop", "24", "24", "--eval-stride", "16", "16"],
                        "tiny": ["--valtiny"]}.items():
        rc, _, err = run(common(voc, tmp_path, "--state", "3", "--exp-name", name, "--continue-from", str(labeller),
                                *extra), capsys)
        assert rc == 0, err
        results[name] = log_lines(tmp_path)[name]
    assert results["sliding-one-window"][0] == results["whole"][0]
    assert results["msf-1-noflip"][0] == results["whole"][0]
    assert results["whole"][1]["protocol"] == "whole" and results["tiny"][1]["val"] == "valtiny"
    assert results["msf"][1]["protocol"] == "msf(0.75/1+flip)"
    assert results["sliding"][1]["protocol"] == "sliding(24x24/16x16)"


class Pointwise(nn.Module):
    """A 1×1 convolution: flip-equivariant and independent of the window it sees."""

    def __init__(self, channels=3, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(channels, classes, 1)

    def forward(self, x):
        return self.conv(x)


class WindowMean(nn.Module):
    """Logits (mean of channel 0 over the whole input, 0): depends on the window only."""

    def forward(self, x):
        m = x[:, :1].mean(dim=(2, 3), keepdim=True).expand(-1, 1, *x.shape[-2:])
        return torch.cat([m, torch.zeros_like(m)], dim=1)


def test_window_starts_by_hand():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(10, 4, 4) == [0, 4, 6]
    assert window_starts(3, 4, 2) == [0]
    assert window_starts(4, 4, 2) == [0]


def test_sliding_window_averages_window_probabilities_by_hand():
    x = torch.tensor([1.0, 3.0, -2.0, 5.0]).view(1, 1, 1, 4)
    probs = probabilities_sliding(WindowMean(), x, window=(1, 2), stride=(1, 1))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731  softmax of (m, 0), class 0
    w01, w12, w23 = sig(2.0), sig(0.5), sig(1.5)
    expected = [w01, (w01 + w12) / 2, (w12 + w23) / 2, w23]
    np.testing.assert_allclose(probs[0, 0, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(probs.sum(dim=1).numpy(), 1.0, rtol=1e-6)


def test_protocol_identities_on_tiny_models():
    torch.manual_seed(1)
    images = torch.randn(2, 3, 17, 23)
    deeplab = deeplab_v2(5, "mobilenet_v3_large", pretrained=None).eval()
    with torch.no_grad():
        whole = probabilities_whole(deeplab, images)
        assert whole.shape == (2, 5, 17, 23)
        torch.testing.assert_close(probabilities_sliding(deeplab, images, (17, 23), (5, 5)), whole)
        torch.testing.assert_close(probabilities_msf(deeplab, images, [1.0], flip=False), whole)
        torch.testing.assert_close(probabilities(deeplab, images, Protocol("msf", scales=(1.0,), flip=False)), whole)
        pointwise = Pointwise()
        torch.testing.assert_close(probabilities_msf(pointwise, images, [1.0], flip=True),
                                   probabilities_whole(pointwise, images))
        torch.testing.assert_close(probabilities_sliding(pointwise, images, (8, 8), (3, 5)),
                                   probabilities_whole(pointwise, images))
        # a flip-sensitive model: msf+flip = the mean of the direct and the mirrored-back pass
        mirrored = probabilities_whole(deeplab, images.flip(-1)).flip(-1)
        torch.testing.assert_close(probabilities_msf(deeplab, images, [1.0], flip=True), (whole + mirrored) / 2)
