"""What a segmentation run works on, built from its flags: class count, sizes, input convention,
split-list names, datasets and the model (docs/method.md §1.1, §4.2, §5, §6.1, §9.1).

Split lists (docs/method.md §9.1): labelled ``{train-set}_labeled_{sets-id}``; unlabelled (the pseudo set,
always the *whole* list) ``{train-set without -l/-r}_unlabeled_{sets-id}``; validation ``val``
(``valtiny`` with ``--valtiny``). VOC lists live in ``ImageSets/Segmentation/``, Cityscapes lists
in ``data_lists/`` (training lists index ``leftImg8bit/train``, validation lists ``leftImg8bit/val``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from segmentation.datasets import CITY_NUM_CLASSES, VOC_NUM_CLASSES, CityscapesSegmentation, VOCSegmentation
from segmentation.models import deeplab_v2
from segmentation.transforms import (CITY_CROP_SIZE, VOC_CROP_SIZE, default_test_size, test_transforms,
                                     train_transforms)
from utils.checkpoint import load_model_weights

DEFAULT_DATA_ROOTS = {"voc": "datasets/VOCdevkit/VOC2012", "city": "datasets/cityscapes"}
MODEL_SPLIT_SUFFIXES = ("-l", "-r")  # DMS subsets (docs/method.md §1.3) share the unlabelled list of their split


def num_classes(args: argparse.Namespace) -> int:
    return VOC_NUM_CLASSES if args.dataset == "voc" else CITY_NUM_CLASSES


def input_norm(args: argparse.Namespace) -> str:
    """``coco`` (Caffe: BGR, 0–255, mean subtraction) with ``--coco``, else ``imagenet`` (docs/method.md §6.1)."""
    return "coco" if args.coco else "imagenet"


def crop_size(args: argparse.Namespace) -> tuple[int, int]:
    if args.crop_size:
        return tuple(args.crop_size)
    return VOC_CROP_SIZE if args.dataset == "voc" else CITY_CROP_SIZE


def test_size(args: argparse.Namespace) -> tuple[int, int]:
    """VOC: the size test images are padded to (505×505); City: the size they are resized to (512×1024)."""
    return tuple(args.test_size) if args.test_size else default_test_size(args.dataset)


def data_root(args: argparse.Namespace) -> Path:
    return Path(args.data_root or DEFAULT_DATA_ROOTS[args.dataset])


def labelled_list(args: argparse.Namespace) -> str:
    return f"{args.train_set}_labeled_{args.sets_id}"


def unlabelled_list(args: argparse.Namespace) -> str:
    """``{train-set}_unlabeled_{sets-id}`` with a DMS ``-l``/``-r`` suffix stripped (docs/method.md §9.1)."""
    base = args.train_set
    for suffix in MODEL_SPLIT_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return f"{base}_unlabeled_{args.sets_id}"


def val_list(args: argparse.Namespace) -> str:
    return "valtiny" if args.valtiny else "val"


def _dataset(args: argparse.Namespace, list_name: str, transforms, city_split: str = "train", **kwargs):
    if args.dataset == "voc":
        return VOCSegmentation(data_root(args), list_name, transforms, test_size=test_size(args), **kwargs)
    return CityscapesSegmentation(data_root(args), city_split, list_name, transforms, size=test_size(args), **kwargs)


def training_set(args: argparse.Namespace, list_name: str, pseudo_dir: str | Path | None = None,
                 load_labels: bool = True):
    """Training items (labelled GT or, with ``pseudo_dir``, pseudo labels; images only without
    ``load_labels``) with the training augmentation of docs/method.md §6.1; City images are first resized to
    the test size (512×1024)."""
    resize = test_size(args) if args.dataset == "city" else None
    transforms = train_transforms(args.dataset, crop_size(args), input_norm(args), resize=resize)
    return _dataset(args, list_name, transforms, pseudo_dir=pseudo_dir, load_labels=load_labels)


def evaluation_set(args: argparse.Namespace):
    """The validation (or valtiny) list with the test preprocessing, GT labels included."""
    transforms = test_transforms(args.dataset, input_norm(args), test_size(args))
    return _dataset(args, val_list(args), transforms, city_split="val")


def labeling_set(args: argparse.Namespace, ground_truth: bool = False):
    """The whole unlabelled list with the test preprocessing, items ``(image, None, id, (h, w))``;
    with ``ground_truth`` ``(image, label, id, (h, w))`` (for the labeller's diagnostics only)."""
    transforms = test_transforms(args.dataset, input_norm(args), test_size(args))
    return _dataset(args, unlabelled_list(args), transforms, labeling=True, load_labels=ground_truth)


def build_model(args: argparse.Namespace, device: torch.device,
                memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """DeepLab-v2 on ``device``: weights from ``--continue-from`` (a COCO-converted checkpoint or a
    previous run's snapshot, weights only, docs/method.md §1.1/§4.2), else the ``--pretrained`` backbone init."""
    pretrained = None if args.continue_from else args.pretrained
    model = deeplab_v2(num_classes(args), args.backbone, pretrained=pretrained,
                       all_aspp_branches=args.all_aspp_branches)
    if args.continue_from:
        load_model_weights(model, args.continue_from)
    return model.to(device=device, memory_format=memory_format)
