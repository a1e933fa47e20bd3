"""Backbone trunks of DeepLab-v2: dilated ResNet-101/50 (output stride 8) and MobileNetV3-Large (16).

A trunk's ``state_dict`` keys are exactly the torchvision classification model's keys minus its
classifier (``conv1.weight``, ``layer1.0.downsample.0.weight`` ...; ``features.0.0.weight`` ...), so
torchvision ImageNet files and the converted COCO DeepLab-v2 file load into it by name.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models import mobilenetv3, resnet

RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def resnet_trunk(depth: int) -> nn.Sequential:
    """torchvision ResNet-``depth`` (V1.5) with layer3/layer4 dilated (2, 4), cut after layer4.

    ``replace_stride_with_dilation=[False, True, True]`` keeps each dilated stage's first block at
    the previous dilation (1 and 2), as torchvision does (docs/method.md §4.1). Output: 2048 channels, stride 8.
    """
    builders = {101: resnet.resnet101, 50: resnet.resnet50}
    net = builders[depth](weights=None, replace_stride_with_dilation=[False, True, True])
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in RESNET_PARTS))


def mobilenet_v3_large_trunk() -> nn.Sequential:
    """torchvision MobileNetV3-Large ``features`` (960 channels out) at output stride 16.

    This is the trunk of torchvision's DeepLabV3/LR-ASPP models (``dilated=True``: the last stage
    is dilated instead of strided). Dilating one more stage to reach stride 8 made CPU training
    2.5× slower (dilated 5×5 depthwise convolutions on small maps), so :class:`DeepLabV2`
    interpolates this backbone's logits onto the stride-8 grid instead (see ``logits_to_stride8``).
    """
    setting, last_channel = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_large", dilated=True)
    net = mobilenetv3.MobileNetV3(setting, last_channel)
    return nn.Sequential(OrderedDict(features=net.features))


class TinyBlock(nn.Module):
    """A basic residual block (two 3×3 convs) that may stride or dilate; 1×1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity() if stride == 1 and in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def tiny_trunk(widths=(32, 64, 96, 128, 192)) -> nn.Sequential:
    """A small dilated residual net (output stride 8, ~1.6 M parameters) for CPU demos and tests.

    It has no pretrained weights: it exists because the ImageNet-pretrained trunks cannot be
    downloaded offline and a from-scratch MobileNetV3 learns the synthetic data too slowly for a
    15-minute CPU demo. Same dilation rule as DeepLab-v2's ResNet: the last two stages keep the
    resolution (dilation 2 and 4) instead of striding.
    """
    w0, w1, w2, w3, w4 = widths
    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(nn.Conv2d(3, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True)),
        layer1=TinyBlock(w0, w1, stride=2),
        layer2=TinyBlock(w1, w2, stride=2),
        layer3=TinyBlock(w2, w3, dilation=2),
        layer4=TinyBlock(w3, w4, dilation=4),
    ))


# name -> (builder, output channels, output stride)
BACKBONES = {
    "resnet101": (lambda: resnet_trunk(101), 2048, 8),
    "resnet50": (lambda: resnet_trunk(50), 2048, 8),
    "mobilenet_v3_large": (mobilenet_v3_large_trunk, 960, 16),
    "tiny": (tiny_trunk, 192, 8),
}


def build_trunk(name: str) -> tuple[nn.Sequential, int, int]:
    """Return (trunk with random init, its output channels, its output stride)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    builder, channels, stride = BACKBONES[name]
    return builder(), channels, stride
