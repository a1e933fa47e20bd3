"""DeepLab-v2: a dilated backbone (output stride 8) plus the ASPP-v2 head (docs/method.md §4.1).

Module names follow the original DST-CBC model, so checkpoints are interchangeable: the backbone's
keys are ``backbone.<torchvision key>``, the head's ``classifier.0.convs.K.{weight,bias}``.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segmentation.models.backbones import build_trunk
from segmentation.models.pretrained import imagenet_weights_file, load_backbone_weights


class ASPPv2(nn.Module):
    """Sum of 3×3 convs with bias, dilation = padding = rate; no BN, ReLU or dropout; default init.

    As in the original code (docs/method.md §4.1, §11.1) only the first two branches (rates 6 and 12) are
    summed unless ``all_branches``; the other branches still exist, so checkpoints and parameter
    counts match. Their parameters get ``requires_grad=False``: they never receive a gradient in the
    original either, so SGD (which skips parameters without a gradient, weight decay included) never
    changes them. This is numerically identical, and DistributedDataParallel then works without
    ``find_unused_parameters=True``.
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24),
                 all_branches: bool = False) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=r, dilation=r, bias=True) for r in rates)
        self.used_branches = len(rates) if all_branches else min(2, len(rates))
        for conv in self.convs[self.used_branches:]:
            conv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs[0](x)
        for conv in self.convs[1:self.used_branches]:
            out = out + conv(x)
        return out


def stride8_size(height: int, width: int) -> tuple[int, int]:
    """Size of the stride-8 grid of a ``height``×``width`` input: ceil(n / 8) (321 → 41, 505 → 64)."""
    return -(-height // 8), -(-width // 8)


def logits_to_stride8(logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinearly resample stride-16 maps onto the stride-8 grid of a ``height``×``width`` input.

    Stride-16 cell j and stride-8 cell i sit at input pixels 16j and 8i, so i = 2j exactly:
    ``align_corners=True`` onto 2·h16 − 1 cells is exact, and when ceil(n/8) = 2·h16 the extra
    last row/column is a copy of its neighbour.
    """
    h16, w16 = logits.shape[-2:]
    out = F.interpolate(logits, size=(2 * h16 - 1, 2 * w16 - 1), mode="bilinear", align_corners=True)
    h8, w8 = stride8_size(height, width)
    if (h8, w8) != out.shape[-2:]:
        out = F.pad(out, (0, w8 - out.shape[-1], 0, h8 - out.shape[-2]), mode="replicate")
    return out


class DeepLabV2(nn.Module):
    """``forward(images N×3×H×W) -> logits N×C×ceil(H/8)×ceil(W/8)`` (output stride 8, not upsampled).

    ``trunk_stride`` 16 (the MobileNet trunk): the head runs at stride 16 and its logits are
    resampled onto the stride-8 grid, so every backbone gives the same output size.
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module, trunk_stride: int = 8) -> None:
        super().__init__()
        if trunk_stride not in (8, 16):
            raise ValueError(f"trunk_stride must be 8 or 16, got {trunk_stride}")
        self.backbone = backbone
        self.classifier = classifier
        self.trunk_stride = trunk_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.backbone(x))
        if self.trunk_stride == 16:
            out = logits_to_stride8(out, x.shape[-2], x.shape[-1])
        return out


def deeplab_v2(num_classes: int, backbone: str = "resnet101", pretrained: str | os.PathLike | None = "imagenet",
               all_aspp_branches: bool = False, rates: Sequence[int] = (6, 12, 18, 24)) -> DeepLabV2:
    """Build DeepLab-v2.

    ``backbone``: ``"resnet101"`` (the paper's), ``"resnet50"`` or ``"mobilenet_v3_large"`` (a fast
    stride-16 trunk for CPU runs; its logits are resampled to stride 8, see :class:`DeepLabV2`).
    ``pretrained``: ``"imagenet"`` (torchvision ImageNet weights, see
    :mod:`segmentation.models.pretrained`), ``None``/``"none"`` (random init) or a path to a
    torchvision-style ImageNet state dict. The head always has PyTorch's default init.
    ``all_aspp_branches``: sum all four ASPP branches instead of the original's d6 + d12.
    """
    trunk, channels, stride = build_trunk(backbone)
    if isinstance(pretrained, str) and pretrained.lower() == "imagenet":
        load_backbone_weights(trunk, imagenet_weights_file(backbone), backbone)
    elif pretrained is not None and not (isinstance(pretrained, str) and pretrained.lower() == "none"):
        load_backbone_weights(trunk, pretrained, backbone)
    head = ASPPv2(channels, num_classes, rates=rates, all_branches=all_aspp_branches)
    return DeepLabV2(trunk, nn.Sequential(head), trunk_stride=stride)


def parameter_groups(model: nn.Module, lr: float) -> list[dict]:
    """SGD parameter groups (backbone, head), both at ``lr`` (docs/method.md §4.1: no 10× head lr).

    All parameters are listed, the frozen unused ASPP branches included (as in the original's
    optimizer); SGD leaves parameters without a gradient untouched.
    """
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    return [{"params": list(model.backbone.parameters()), "lr": lr},
            {"params": list(model.classifier.parameters()), "lr": lr}]
