"""The datasets and the model of a segmentation run, built from its :class:`~segmentation.run_config.RunConfig`
(docs/method.md §1.1, §4.2, §5, §6.1)."""
from __future__ import annotations

import torch
from torch import nn

from segmentation.datasets import CityscapesSegmentation, VOCSegmentation
from segmentation.models import deeplab_v2
from segmentation.run_config import RunConfig
from segmentation.transforms import test_transforms, train_transforms
from utils.checkpoint import load_model_weights


def _dataset(cfg: RunConfig, list_name: str, transforms, city_split: str = "train", **kwargs):
    if cfg.args.dataset == "voc":
        return VOCSegmentation(cfg.data_root, list_name, transforms, test_size=cfg.test_size, **kwargs)
    return CityscapesSegmentation(cfg.data_root, city_split, list_name, transforms, size=cfg.test_size, **kwargs)


def training_set(cfg: RunConfig, list_name: str, pseudo_dir=None, load_labels: bool = True):
    """Training items (labelled GT or, with ``pseudo_dir``, pseudo labels; images only without
    ``load_labels``) with the training augmentation of docs/method.md §6.1; City images are first resized to
    the test size (512×1024)."""
    resize = cfg.test_size if cfg.args.dataset == "city" else None
    transforms = train_transforms(cfg.args.dataset, cfg.crop_size, cfg.input_norm, resize=resize)
    return _dataset(cfg, list_name, transforms, pseudo_dir=pseudo_dir, load_labels=load_labels)


def evaluation_set(cfg: RunConfig):
    """The validation (or valtiny) list with the test preprocessing, GT labels included."""
    transforms = test_transforms(cfg.args.dataset, cfg.input_norm, cfg.test_size)
    return _dataset(cfg, cfg.val_list, transforms, city_split="val")


def labeling_set(cfg: RunConfig, ground_truth: bool = False):
    """The whole unlabelled list with the test preprocessing, items ``(image, None, id, (h, w))``;
    with ``ground_truth`` ``(image, label, id, (h, w))`` (for the labeller's diagnostics only)."""
    transforms = test_transforms(cfg.args.dataset, cfg.input_norm, cfg.test_size)
    return _dataset(cfg, cfg.unlabelled_list, transforms, labeling=True, load_labels=ground_truth)


def build_model(cfg: RunConfig, device: torch.device,
                memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """DeepLab-v2 on ``device``: weights from ``--continue-from`` (a COCO-converted checkpoint or a
    previous run's snapshot, weights only, docs/method.md §1.1/§4.2), else the ``--pretrained`` backbone init."""
    args = cfg.args
    pretrained = None if args.continue_from else args.pretrained
    model = deeplab_v2(cfg.num_classes, args.backbone, pretrained=pretrained, all_aspp_branches=args.all_aspp_branches)
    if args.continue_from:
        load_model_weights(model, args.continue_from)
    return model.to(device=device, memory_format=memory_format)
