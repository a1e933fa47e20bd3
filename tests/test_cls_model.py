"""WRN-28-2 (docs/method.md §4.3): parameter count, shapes, shortcut structure, block arithmetic, init."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classification.models import PreActBlock, build_backbone, wrn_28_2
from classification.run_config import BACKBONES


def block_params(cin: int, cout: int) -> int:
    """BN(cin) + conv3x3 cin→cout + BN(cout) + conv3x3 cout→cout (+ 1x1 shortcut when cin != cout)."""
    return 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout + (cin * cout if cin != cout else 0)


def test_parameter_count_matches_spec_and_hand_count():
    by_hand = 3 * 16 * 9  # stem
    cin = 16
    for width in (32, 64, 128):
        by_hand += block_params(cin, width) + 3 * block_params(width, width)
        cin = width
    by_hand += 2 * 128 + 128 * 10 + 10  # final BN, FC
    net = wrn_28_2()
    total = sum(p.numel() for p in net.parameters())
    assert by_hand == 1_467_610
    assert total == 1_467_610
    assert sum(p.numel() for p in wrn_28_2(num_classes=100).parameters()) == 1_467_610 + 90 * 129


def hand_count(widths: tuple[int, ...], classes: int = 10) -> int:
    total, cin = 3 * 16 * 9, 16
    for width in widths:
        total, cin = total + block_params(cin, width) + 3 * block_params(width, width), width
    return total + 2 * cin + cin * classes + classes


def test_backbone_flag_builds_wrn_28_2_or_wrn_28_8():
    assert hand_count((32, 64, 128)) == 1_467_610  # the formula above, as a function
    assert set(BACKBONES) == {"wrn-28-2", "wrn-28-8"}
    torch.manual_seed(0)
    a = build_backbone("wrn-28-2")
    torch.manual_seed(0)
    b = wrn_28_2()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # same init
    wide = build_backbone("wrn-28-8")
    assert sum(p.numel() for p in wide.parameters()) == hand_count((128, 256, 512)) == 23_354_842
    assert wide(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet18")


def test_output_shape_and_downsampling():
    torch.manual_seed(0)
    net = wrn_28_2().eval()
    sizes = []
    for stage in (net.block1, net.block2, net.block3):
        stage.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert sizes == [(32, 32, 32), (64, 16, 16), (128, 8, 8)]


def test_shortcut_structure():
    net = wrn_28_2()
    stages = [net.block1.layer, net.block2.layer, net.block3.layer]
    for stage, (cin, cout, stride) in zip(stages, [(16, 32, 1), (32, 64, 2), (64, 128, 2)]):
        assert len(stage) == 4
        first = stage[0]
        assert isinstance(first.convShortcut, nn.Conv2d)
        assert first.convShortcut.kernel_size == (1, 1) and first.convShortcut.stride == (stride, stride)
        assert (first.convShortcut.in_channels, first.convShortcut.out_channels) == (cin, cout)
        assert first.conv1.stride == (stride, stride)
        for block in stage[1:]:
            assert block.convShortcut is None and block.conv1.stride == (1, 1)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 4 * 2 + 3  # stem, two per block, three shortcuts
    assert not any(isinstance(m, (nn.Dropout, nn.LeakyReLU)) for m in net.modules())
    assert net.fc.in_features == 128 and net.bn1.num_features == 128


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=1e-5)


def _randomise_bn(block, generator):
    for bn in (block.bn1, block.bn2):
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
        bn.weight.data.copy_(torch.randn(bn.num_features, generator=generator))
        bn.bias.data.copy_(torch.randn(bn.num_features, generator=generator))


@pytest.mark.parametrize("cin,cout,stride", [(4, 6, 2), (6, 6, 1)])
def test_block_arithmetic(cin, cout, stride):
    """Changed channels: 1x1 conv on BN-ReLU(x); same channels: identity on raw x."""
    g = torch.Generator().manual_seed(1)
    block = PreActBlock(cin, cout, stride).eval()
    with torch.no_grad():
        _randomise_bn(block, g)
        x = torch.randn(2, cin, 8, 8, generator=g)
        pre = torch.relu(_bn(x, block.bn1))
        mid = torch.relu(_bn(F.conv2d(pre, block.conv1.weight, stride=stride, padding=1), block.bn2))
        residual = F.conv2d(mid, block.conv2.weight, padding=1)
        shortcut = F.conv2d(pre, block.convShortcut.weight, stride=stride) if cin != cout else x
        assert torch.allclose(block(x), shortcut + residual, atol=1e-5)


def test_identity_block_rejects_stride():
    with pytest.raises(ValueError):
        PreActBlock(8, 8, 2)


def test_init_and_batchnorm_settings():
    torch.manual_seed(0)
    net = wrn_28_2()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.momentum == 0.1 and m.eps == 1e-5
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
    assert torch.all(net.fc.bias == 0)
    # Kaiming normal, fan_out: std = sqrt(2 / (out_channels * k * k)).
    conv = net.block3.layer[1].conv2  # 128 * 128 * 9 weights
    expected = math.sqrt(2.0 / (128 * 9))
    assert abs(conv.weight.std().item() / expected - 1) < 0.02
    assert abs(conv.weight.mean().item()) < 0.05 * expected
    shortcut = net.block3.layer[0].convShortcut  # fan_out = 128
    assert abs(shortcut.weight.std().item() / math.sqrt(2.0 / 128) - 1) < 0.05


def test_state_dict_keys_follow_original_names():
    keys = set(wrn_28_2().state_dict())
    for key in ("conv1.weight", "block1.layer.0.convShortcut.weight", "block3.layer.3.bn2.running_var",
                "block2.layer.1.conv2.weight", "bn1.weight", "fc.weight", "fc.bias"):
        assert key in keys
    assert "block1.layer.1.convShortcut.weight" not in keys
