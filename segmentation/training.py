"""Supervised (``--state 2``) and DMT (``--state 1``) training of DeepLab-v2 (docs/method.md §1.1, §3, §7.1, §8).

* Supervised: batches of ``--batch-size-labeled`` from ``{train-set}_labeled_{sets-id}``;
  L = epochs × len(labelled loader).
* DMT: step s takes batch s of the pseudo stream (the whole unlabelled list read from
  ``--pseudo-dir``; it defines the epoch, L = epochs × len(pseudo loader)) and batch s of the
  labelled stream (restarted when exhausted), concatenates [pseudo; labelled] and runs one forward;
  the loss (``--loss``: :func:`utils.losses.dmt_loss` and its variants, docs/method.md §3.1–3.2) gets the
  labels, the confidences (1 for the labelled pixels) and the number of pseudo images.
  ``--loss online`` (:func:`utils.losses.online_loss`) reads no pseudo folder and no label of an
  unlabelled image: those get their targets from the model itself.
* SGD (momentum 0.9, ``--weight-decay`` on every parameter, backbone and head groups at the same
  lr), poly schedule per iteration, a fresh optimizer every run (docs/method.md §7.1, §11.20); weights from
  ``--continue-from`` only.
* The loop, validation schedule, best snapshot, resume checkpoints and TensorBoard scalars are
  :class:`utils.trainer.Trainer`'s. Validation uses ``--eval-protocol`` (default: whole image).
* Under torchrun the batch flags stay global: step s's global batch is the one of a single
  process, and the processes split the concatenated [pseudo; labelled] batch (VOC's 7 + 1 over 4
  processes: 2 images each, the last one holding the labelled image), each knowing which of its
  images are pseudo-labelled. The loss divides by the whole global batch's pixel count, so the
  averaged gradient is one process's on the same batch; BatchNorm is SyncBatchNorm on GPUs
  (``--no-sync-bn``: per-process statistics), plain per-process BatchNorm on CPU/gloo.
"""
from __future__ import annotations

import argparse
import functools
from typing import Callable

import torch
from torch import nn

from segmentation import builders, evaluation
from segmentation.run_config import RunConfig
from segmentation.datasets import collate
from segmentation.models import parameter_groups
from segmentation.palette import VAL_PICTURES, picture_strips
from utils import distributed, label_quality
from utils.checkpoint import unwrap
from utils.cli import Runtime, data_loader_kwargs
from utils.errors import UserError
from utils.losses import dmt_loss, online_loss, supervised_loss
from utils.run_log import RunLogger, finish_run, save_config
from utils.schedules import SGD_MOMENTUM, poly_scheduler
from utils.trainer import EpochStream, Trainer, average_bn_statistics_, paired_batches, to_device

PSEUDO_SEED_OFFSET = 1_000_003  # the pseudo stream's shuffling seed differs from the labelled one's


def make_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameter_groups(model, args.lr), lr=args.lr, momentum=SGD_MOMENTUM,
                           weight_decay=args.weight_decay)


def check_pseudo_files(dataset) -> None:
    """Every unlabelled image must have its pseudo-label file before training starts."""
    missing = [i for i in dataset.ids if not dataset.pseudo_path(i).is_file()]
    if missing:
        raise UserError(f"{dataset.pseudo_path(missing[0])}: pseudo-label file not found ({len(missing)} of "
                        f"{len(dataset.ids)} missing); rerun the labelling step (--state 1 --labeling) into "
                        f"{dataset.pseudo_dir}")


class ShareCollate:
    """Collates one part of this rank's share of a step's batch (:func:`segmentation.datasets.collate`);
    a part with no sample on this rank (the global batch split over more processes than it has
    images of that part) gives empty tensors of the crop's shape: ``kind`` ``"labelled"`` (images,
    labels), ``"pseudo"`` (images, labels, confidences) or ``"images"`` (images, None: the online
    ablation's unlabelled images)."""

    def __init__(self, crop: tuple[int, int], kind: str) -> None:
        self.crop, self.kind = (int(crop[0]), int(crop[1])), kind

    def __call__(self, items):
        if items:
            return collate(items)
        h, w = self.crop
        images = torch.zeros(0, 3, h, w)
        if self.kind == "images":
            return images, None
        labels = torch.zeros(0, h, w, dtype=torch.long)
        return (images, labels, torch.zeros(0, h, w)) if self.kind == "pseudo" else (images, labels)


def supervised_step(model: nn.Module, loss_fn: Callable, rt: Runtime) -> Callable:
    """One forward of a labelled batch; ``loss_fn(logits, labels)`` (:func:`utils.losses.supervised_loss`)."""
    plain = unwrap(model)

    def step(batch, _step: int):
        images, labels = batch
        images = to_device(images, rt.device, rt.memory_format)
        with torch.autocast(**rt.precision.autocast_kwargs):
            logits = model(images)
        average_bn_statistics_(plain, images.shape[0])  # no-op in one process / SyncBN
        loss, stats = loss_fn(logits, to_device(labels, rt.device))
        return loss, stats, images.shape[0]
    return step


def dmt_step(model: nn.Module, loss_fn: Callable, rt: Runtime, online: bool) -> Callable:
    """[pseudo; labelled] in one forward (docs/method.md §3.1, §7.1): ``loss_fn(logits, labels, confidences,
    num_pseudo)`` (:func:`utils.losses.dmt_loss`), the labelled pixels with confidence 1; online
    (:func:`utils.losses.online_loss`): ``loss_fn(logits, labelled labels, num_pseudo)``, the
    unlabelled images come without labels."""
    plain = unwrap(model)

    def step(batch, _step: int):
        (p_images, *p_targets), (l_images, l_labels) = batch
        num_pseudo = p_images.shape[0]
        # Each (pinned) half goes to the device on its own; concatenating on the host first would
        # make a pageable copy, and a pageable host→GPU copy synchronises the stream.
        images = torch.cat([to_device(p_images, rt.device), to_device(l_images, rt.device)])
        images = images.contiguous(memory_format=rt.memory_format)
        l_labels = to_device(l_labels, rt.device)
        with torch.autocast(**rt.precision.autocast_kwargs):
            logits = model(images)
        average_bn_statistics_(plain, images.shape[0])  # no-op in one process / SyncBN
        if online:
            loss, stats = loss_fn(logits, l_labels, num_pseudo)
        else:
            p_labels, p_confidences = (to_device(t, rt.device) for t in p_targets)
            labels = torch.cat([p_labels, l_labels])
            confidences = torch.cat([p_confidences, torch.ones(l_labels.shape, device=rt.device)])
            loss, stats = loss_fn(logits, labels, confidences, num_pseudo)
        return loss, stats, images.shape[0]
    return step


def dmt_loss_fn(args: argparse.Namespace) -> Callable:
    """``--loss``: :func:`utils.losses.online_loss` or :func:`utils.losses.dmt_loss` with its variant."""
    if args.loss == "online":
        return functools.partial(online_loss, threshold=args.online_threshold)
    return functools.partial(dmt_loss, gamma1=args.gamma1, gamma2=args.gamma2, variant=args.loss)


def run_training(cfg: RunConfig, rt: Runtime) -> None:
    args = cfg.args
    dmt, online = cfg.task == "dmt", cfg.online
    loader_kwargs = data_loader_kwargs(args.workers, rt.device)
    crop = cfg.crop_size
    labelled = EpochStream(builders.training_set(cfg, cfg.labelled_list), args.batch_size_labeled,
                           seed=args.seed, collate_fn=ShareCollate(crop, "labelled"), **loader_kwargs)
    if dmt:
        if online:  # the model labels these itself: no label file is read
            pseudo_set = builders.training_set(cfg, cfg.unlabelled_list, load_labels=False)
        else:
            pseudo_set = builders.training_set(cfg, cfg.unlabelled_list, pseudo_dir=cfg.pseudo_dir)
            check_pseudo_files(pseudo_set)
        pseudo = EpochStream(pseudo_set, args.batch_size_pseudo, seed=args.seed + PSEUDO_SEED_OFFSET,
                             collate_fn=ShareCollate(crop, "images" if online else "pseudo"), **loader_kwargs)
        steps_per_epoch = len(pseudo)
        batches = lambda start: paired_batches(pseudo, labelled, start)  # noqa: E731
    else:
        steps_per_epoch = len(labelled)
        batches = labelled.iterate
    total_steps = args.epochs * steps_per_epoch

    val_loader = distributed.eval_loader(builders.evaluation_set(cfg), cfg.val_batch, collate_fn=collate, **loader_kwargs)
    protocol = cfg.protocol

    model = builders.build_model(cfg, rt.device, rt.memory_format)
    model = distributed.wrap_model(model, rt.device, sync_bn=args.sync_bn)  # None: SyncBN on CUDA under torchrun
    if args.compile:
        model = torch.compile(model)
    optimizer = make_optimizer(model, args)
    scheduler = poly_scheduler(optimizer, total_steps)
    if dmt:
        step_fn = dmt_step(model, dmt_loss_fn(args), rt, online)
    else:
        step_fn = supervised_step(model, supervised_loss, rt)

    def evaluate() -> dict[str, float]:
        # the first VAL_PICTURES validation images, ground truth and prediction, to TensorBoard
        metrics, samples = evaluation.evaluate_with_samples(
            unwrap(model), val_loader, cfg.num_classes, rt.device, rt.precision, protocol, rt.memory_format,
            keep=VAL_PICTURES if rt.dist.is_main else 0)
        for i, strip in enumerate(picture_strips(samples, cfg.input_norm, args.dataset)):
            logger.image(f"val/pictures/{i}", strip, trainer.step)
        return metrics

    files = cfg.files
    if rt.dist.is_main:
        save_config(files.config, {**vars(args), "total_steps": total_steps,
                                                   "steps_per_epoch": steps_per_epoch,
                                                   "precision": rt.precision.mode, "world_size": rt.dist.world_size})
    logger = RunLogger(files.tb_dir, args.exp_name, enabled=rt.dist.is_main)
    post_step = (lambda _step: optimizer.step()) if online and args.online_double_step else None
    trainer = Trainer(model=model, optimizer=optimizer, scheduler=scheduler, precision=rt.precision,
                      total_steps=total_steps, val_every=args.val_num_steps, logger=logger, device=rt.device,
                      snapshot_path=files.snapshot, resume_path=files.resume,
                      log_every=max(1, steps_per_epoch // 10), resume_every=args.resume_every,
                      metric_name="miou", desc=args.exp_name, is_main=rt.dist.is_main, post_step=post_step)
    result = trainer.fit(batches, step_fn, evaluate)
    logger.close()
    if rt.dist.is_main:
        if args.do_not_save:
            files.snapshot.unlink(missing_ok=True)
        finish_run(files.out_dir, files.log_file, args.exp_name, result.best,
                   final=result.final, protocol=protocol.describe(), val=cfg.val_list,
                   iters=result.steps, **result.cost,
                   **(label_quality.log_fields(cfg.labeling_record)
                      if dmt and not online else {}))  # the pass's pseudo-label quality
        trainer.cleanup()
        print(f"{args.exp_name}: best val mIoU {result.best:.2f}, final {result.final:.2f} "
              f"({result.steps} iterations)", flush=True)
