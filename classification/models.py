"""WRN-28-2, the pre-activation wide ResNet of the CIFAR-10 experiments (docs/method.md §4.3), and its
wider sibling WRN-28-8 (``--backbone wrn-28-8``: stage widths 128/256/512, the same blocks).

xternalz style: conv3x3 3→16, then three stages of four blocks (widths 32/64/128, strides 1/2/2),
then BN-ReLU, 8x8 average pooling and a linear layer 128→classes. A block computes
BN-ReLU → conv3x3(stride) → BN-ReLU → conv3x3 and adds a shortcut:

* channels change (the first block of each stage): the shortcut is a 1x1 conv (same stride) applied
  to the *pre-activated* input BN-ReLU(x), from which the residual branch starts as well;
* otherwise: the identity on the raw input x.

Departures from the MixMatch/FixMatch WRN kept as in the original: no dropout, plain ReLU (not
leaky), BatchNorm momentum 0.1 / eps 1e-5. Init: convs Kaiming-normal (fan_out, ReLU gain),
BN weight 1 / bias 0, FC bias 0 (FC weight keeps PyTorch's default init). 1,467,610 parameters.

Module names follow the original ``models/wideresnet.py`` (``conv1``, ``block{1,2,3}.layer.{i}``
with ``bn1, conv1, bn2, conv2, convShortcut``, then ``bn1``, ``fc``), so the state_dict keys of
the original checkpoints load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WRN_28_2_WIDTHS = (32, 64, 128)
STAGE_WIDTHS = {"wrn-28-2": WRN_28_2_WIDTHS, "wrn-28-8": (128, 256, 512)}  # --backbone (classification/run_config.py)
WRN_28_2_STRIDES = (1, 2, 2)
WRN_28_2_BLOCKS_PER_STAGE = 4  # (28 - 4) / 6
STEM_CHANNELS = 16
BN_MOMENTUM = 0.1
BN_EPS = 1e-5


def _conv3x3(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class PreActBlock(nn.Module):
    """One pre-activation basic block; see the module docstring for the shortcut rule."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if in_channels == out_channels and stride != 1:
            raise ValueError("an identity shortcut cannot change the resolution: "
                             f"in_channels == out_channels == {in_channels} with stride {stride}")
        self.bn1 = _batch_norm(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = _batch_norm(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, 1)
        self.convShortcut = (nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
                             if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x), inplace=True)
        out = self.conv2(F.relu(self.bn2(self.conv1(pre)), inplace=True))
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        return shortcut + out


class Stage(nn.Module):
    """``blocks`` PreActBlocks; only the first one changes width and stride."""

    def __init__(self, blocks: int, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            PreActBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1)
            for i in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """Pre-activation wide ResNet for 32x32 inputs (docs/method.md §4.3); returns logits (N, num_classes)."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = WRN_28_2_WIDTHS,
                 strides: tuple[int, ...] = WRN_28_2_STRIDES,
                 blocks_per_stage: int = WRN_28_2_BLOCKS_PER_STAGE) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, STEM_CHANNELS, 1)
        channels = STEM_CHANNELS
        for index, (width, stride) in enumerate(zip(widths, strides), start=1):
            setattr(self, f"block{index}", Stage(blocks_per_stage, channels, width, stride))
            channels = width
        self.num_stages = len(widths)
        self.bn1 = _batch_norm(channels)
        self.fc = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original's init: Kaiming-normal fan_out convs, BN 1/0, FC bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for index in range(1, self.num_stages + 1):
            out = getattr(self, f"block{index}")(out)
        out = F.relu(self.bn1(out), inplace=True)
        out = F.avg_pool2d(out, 8)
        return self.fc(torch.flatten(out, 1))


def wrn_28_2(num_classes: int = 10) -> WideResNet:
    """WRN-28-2 as in the DMT CIFAR-10 experiments (docs/method.md §4.3), freshly initialised."""
    return WideResNet(num_classes=num_classes)


def build_backbone(name: str = "wrn-28-2", num_classes: int = 10) -> WideResNet:
    """The ``--backbone`` network, freshly initialised: ``wrn-28-2`` (the paper's) or ``wrn-28-8``."""
    if name not in STAGE_WIDTHS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(STAGE_WIDTHS)}")
    return WideResNet(num_classes=num_classes, widths=STAGE_WIDTHS[name])
