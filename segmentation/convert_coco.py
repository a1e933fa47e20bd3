"""Convert Hung et al.'s COCO DeepLab-v2 weights (Caffe ResNet-101 V1) into this project's model.

    python -m segmentation.convert_coco --source resnet101COCO-41f33a49.pth --num-classes 21 \\
        --out voc_coco_resnet101.pt

Keys are renamed (docs/method.md §4.2): ``layer5.conv2d_list.K.*`` → ``classifier.0.convs.K.*`` and any other
``X`` → ``backbone.X``. With 21 classes all 528 tensors match; with 19 (Cityscapes) the 8 head
tensors have the wrong shape and keep their random init. The BN ``num_batches_tracked`` buffers
missing from the source keep the fresh model's zeros. Output: ``{model, optimizer: None,
lr_scheduler: None}``, written atomically, to be loaded with ``--continue-from``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from segmentation.models import deeplab_v2, read_state_dict
from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import atomic_path

COCO_URL = "http://vllab1.ucmerced.edu/~whung/adv-semi-seg/resnet101COCO-41f33a49.pth"
HEAD_PREFIX = "layer5.conv2d_list."


def target_key(source_key: str) -> str:
    """The model key a Caffe DeepLab-v2 key maps to (docs/method.md §4.2)."""
    if source_key.startswith(HEAD_PREFIX):
        return "classifier.0.convs." + source_key[len(HEAD_PREFIX):]
    return "backbone." + source_key


@dataclass
class ConversionReport:
    total: int = 0                                           # tensors in the source
    matched: list[str] = field(default_factory=list)         # target keys filled from the source
    shape_mismatch: list[str] = field(default_factory=list)  # target keys left at their init
    unknown: list[str] = field(default_factory=list)         # source keys with no target
    not_in_source: list[str] = field(default_factory=list)   # target keys the source lacks

    def summary(self) -> str:
        text = f"matched {len(self.matched)}/{self.total}"
        if self.shape_mismatch:
            text += f"; {len(self.shape_mismatch)} kept their random init (shape mismatch)"
        if self.unknown:
            text += f"; {len(self.unknown)} source tensors unused"
        buffers = sum(k.endswith("num_batches_tracked") for k in self.not_in_source)
        if buffers:
            text += f"; {buffers} num_batches_tracked buffers not in the source (kept at 0)"
        others = len(self.not_in_source) - buffers
        if others:
            text += f"; {others} other model tensors not in the source"
        return text


def convert_coco_state_dict(src_state: Mapping[str, torch.Tensor],
                            model: nn.Module) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Return ``model``'s state dict with every source tensor of matching shape copied in, and a report."""
    new_state = dict(model.state_dict())
    report = ConversionReport(total=len(src_state))
    for key, tensor in src_state.items():
        dst = target_key(key)
        if dst not in new_state:
            report.unknown.append(key)
        elif new_state[dst].shape != tensor.shape:
            report.shape_mismatch.append(dst)
        else:
            new_state[dst] = tensor.detach().to(dtype=new_state[dst].dtype).clone()
            report.matched.append(dst)
    mapped = {target_key(k) for k in src_state}
    report.not_in_source = [k for k in new_state if k not in mapped]
    return new_state, report


def check_conversion(report: ConversionReport, source: Path) -> None:
    """Only the head may mismatch (a different class count); anything else means a wrong file."""
    backbone_problems = ([k for k in report.shape_mismatch if not k.startswith("classifier.")] + report.unknown
                         + [k for k in report.not_in_source if not k.endswith("num_batches_tracked")])
    if backbone_problems:
        raise UserError(f"{source}: not the COCO DeepLab-v2 ResNet-101 weights ({report.summary()}; "
                        f"e.g. {backbone_problems[0]}); download {COCO_URL}")


def load_source(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: COCO DeepLab-v2 weights not found; download {COCO_URL}")
    return read_state_dict(path, f"download {COCO_URL} again")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m segmentation.convert_coco", description=__doc__.split("\n")[0])
    p.add_argument("--source", default="resnet101COCO-41f33a49.pth", help=f"the file from {COCO_URL}")
    p.add_argument("--num-classes", type=int, choices=[21, 19], default=21, help="21 = VOC, 19 = Cityscapes")
    p.add_argument("--out", default=None,
                   help="output file (default voc_coco_resnet101.pt / city_coco_resnet101.pt)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    source = Path(args.source)
    out = Path(args.out or ("voc_coco_resnet101.pt" if args.num_classes == 21 else "city_coco_resnet101.pt"))
    src_state = load_source(source)
    model = deeplab_v2(args.num_classes, backbone="resnet101", pretrained=None)
    new_state, report = convert_coco_state_dict(src_state, model)
    check_conversion(report, source)
    model.load_state_dict(new_state)
    print(report.summary())
    for key in report.shape_mismatch:
        print(f"  random init (shape mismatch): {key}")
    with atomic_path(out) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": None, "lr_scheduler": None}, tmp)
    print(f"saved {out}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
