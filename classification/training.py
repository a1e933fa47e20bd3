"""Training WRN-28-2 on CIFAR-10: the supervised mixup baseline (``main_fs``) and DMT / curriculum
labelling (``main_dmt``), SPEC §1.2, §3.3, §7.2.

* **Baseline** (``main_fs --state 1``): batches of ``--batch-size`` from ``--train-set``;
  λ ~ Beta(α, α) (no max step), loss = λ·CE(y) + (1−λ)·CE(y_π); plain CE without ``--alpha``.
* **DMT** (``main_dmt``): step s takes batch s of the pseudo stream (``<train-set>_pseudo``, which
  defines the epoch) and batch s of the labelled stream (``<train-set>_labeled``, restarted when
  exhausted) as one batch [pseudo; labelled] (:func:`dmt_mixup_loss`):

  1. a no-grad forward of the net in **train mode** (it updates the BN statistics) on the un-mixed
     batch, outside autocast, gives the weights of SPEC §3.1 with c = the stored teacher confidence;
     labelled samples get ``--labeled-weight``; with γ1 = γ2 = 0 (CL) every pseudo weight is 1 and
     the forward still runs, as in the original;
  2. λ ~ Beta(α, α), λ ← max(λ, 1−λ); one permutation π of the whole batch mixes the images and
     the weights (pseudo and labelled samples mix);
  3. loss = (1/N) Σ w̃_n [λ·CE(f(x̃_n), y_n) + (1−λ)·CE(f(x̃_n), y_π(n))], hard labels;
  4. γ_j = γ_j⁰·exp(−5(1 − t/T)²) at iteration t (``--ramp-off-by-one``: the original's counter,
     iteration 1 uses the full γ⁰).

  ``--alpha -1`` trains without mixup on the DMT loss of SPEC §3.1 (weights from the training
  forward itself, γ not ramped), which the scripts never use.
* Both: a fresh network (weights from ``--continue-from`` only), SGD (momentum 0.9), cosine lr per
  iteration over epochs × len(the epoch-defining loader), an EMA of the weights after every step
  (``--ema-decay``), validation every ``--val-num-steps`` iterations (SPEC §8 schedule) on the
  test set or ``--valtiny``. DMT evaluates the initial net first, saves it as the first best and
  replaces it on ``>=``; the baseline snapshots on strictly better.
* The loop, snapshots, resume checkpoints and TensorBoard scalars are :class:`utils.trainer.Trainer`'s.

Outputs: ``<exp>.pt`` (best snapshot), ``<exp>--ema.pt`` (the EMA, model only), ``<exp>_cfg.json``,
TensorBoard ``train/{loss, weighted_loss, accuracy, disagree, current_win, avg_weights, gamma1,
gamma2, lr}`` and ``val/{accuracy, fine_grained}``, and one ``<log>.txt`` line ``<exp>: <best> |
final=… | ema=… | …``.
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch import nn

from classification import options
from classification.augment import train_transform
from classification.cifar import (CifarDataset, label_and_confidence, labelled_dataset, read_pseudo,
                                  rows_to_images)
from classification.evaluation import evaluate, evaluation_loader
from classification.labeling import pseudo_path, record_path
from classification.models import wrn_28_2
from utils import distributed, label_quality
from utils.batches import EpochStream, paired_batches
from utils.checkpoint import load_model_weights, save_checkpoint, unwrap
from utils.cli import Runtime, data_loader_kwargs
from utils.ema import ModelEMA
from utils.errors import UserError
from utils.losses import DynamicMutualLoss, classification_weights, gamma_ramp, mixup_weighted_ce
from utils.mixup import mix, random_permutation, sample_lambda
from utils.run_log import RunLogger, finish_run, save_config
from utils.schedules import cosine_scheduler
from utils.trainer import FitResult, Trainer

MOMENTUM = 0.9
PSEUDO_STREAM_SEED_OFFSET = 7919  # the pseudo stream's shuffling/augmentation seed differs from the labelled one's


def draw_lambda(alpha: float, keep_max: bool) -> float:
    """λ ~ Beta(α, α) (numpy), λ = 1 for α ≤ 0 as the original's mixup_data."""
    return sample_lambda(alpha, keep_max) if alpha > 0 else 1.0


def mixup_accuracy(logits: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam: float) -> torch.Tensor:
    """The original's training accuracy ×100: λ·[pred = y] + (1−λ)·[pred = y_π], averaged."""
    predicted = logits.detach().argmax(dim=1)
    return (lam * (predicted == labels_a).float() + (1 - lam) * (predicted == labels_b).float()).mean() * 100


def mixup_forward(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, lam: float, permutation: torch.Tensor,
                  precision, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward the mixed batch λx + (1−λ)x_π (under autocast); loss (1/N) Σ w̃ [λ·CE(y) + (1−λ)·CE(y_π)]
    with w̃ = λw + (1−λ)w_π (all 1 without ``weights``). Stats: the unweighted ``loss`` and ``accuracy``."""
    with precision.autocast():
        logits = model(mix(images, lam, permutation))
    labels_b = labels[permutation]
    mixed_weights = None if weights is None else mix(weights, lam, permutation)
    loss = mixup_weighted_ce(logits, labels, labels_b, lam, mixed_weights)
    stats = {"accuracy": mixup_accuracy(logits, labels, labels_b, lam)}
    if weights is not None:
        stats["loss"] = mixup_weighted_ce(logits.detach(), labels, labels_b, lam)
        stats["weighted_loss"] = loss.detach()
    return loss, stats


def dmt_mixup_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, confidences: torch.Tensor,
                   split_index: int, gamma1: float, gamma2: float, labeled_weight: float, lam: float,
                   permutation: torch.Tensor, precision) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SPEC §3.3 steps 1–3 for a given λ and permutation (``images`` = [pseudo; labelled], hard
    ``labels``, teacher ``confidences`` with 1 for the labelled samples)."""
    with torch.no_grad():  # train mode, fp32: updates the BN running statistics, as the original
        probs = unwrap(model)(images).float().softmax(dim=1)
    targets = torch.stack([labels.float(), confidences.float()], dim=1)
    weights, stats = classification_weights(probs, targets, split_index, gamma1, gamma2, labeled_weight)
    loss, mix_stats = mixup_forward(model, images, labels, lam, permutation, precision, weights)
    return loss, {**stats, **mix_stats}


def _images(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    return x.to(rt.device, non_blocking=True).contiguous(memory_format=rt.memory_format)


def supervised_step(model: nn.Module, args: argparse.Namespace, rt: Runtime) -> Callable:
    """main_fs: mixup with λ ~ Beta(α, α) (no max step), or plain CE without ``--alpha``."""
    def step(batch, _step: int):
        images, labels = batch
        images, labels = _images(images, rt), labels.to(rt.device, non_blocking=True)
        if args.alpha is None:
            lam, permutation = 1.0, torch.arange(images.shape[0], device=rt.device)
        else:
            lam, permutation = draw_lambda(args.alpha, keep_max=False), random_permutation(images.shape[0], rt.device)
        loss, stats = mixup_forward(model, images, labels, lam, permutation, rt.precision)
        return loss, stats, images.shape[0]
    return step


def dmt_step(model: nn.Module, args: argparse.Namespace, rt: Runtime, total_steps: int) -> Callable:
    """main_dmt: one [pseudo; labelled] batch, SPEC §3.3 (mixup) or §3.1 (``--alpha -1``)."""
    plain_loss = DynamicMutualLoss(args.gamma1, args.gamma2)

    def step(batch, step_number: int):
        (p_images, p_probs), (l_images, l_labels) = batch
        split = p_images.shape[0]
        images = _images(torch.cat([p_images, l_images]), rt)
        p_labels, p_confidences = label_and_confidence(p_probs.to(rt.device, non_blocking=True))
        labels = torch.cat([p_labels, l_labels.to(rt.device, non_blocking=True)])
        confidences = torch.cat([p_confidences, torch.ones(l_labels.shape[0], device=rt.device)])
        if args.alpha == -1:
            gammas = (args.gamma1, args.gamma2)
            with rt.precision.autocast():
                logits = model(images)
            loss, stats = plain_loss(logits, torch.stack([labels.float(), confidences], dim=1), split_index=split)
            stats = {**stats, "accuracy": mixup_accuracy(logits, labels, labels, 1.0)}
        else:
            gammas = tuple(gamma_ramp(g, step_number, total_steps, fix_first_step=not args.ramp_off_by_one)
                           for g in (args.gamma1, args.gamma2))
            lam = draw_lambda(args.alpha, keep_max=True)
            permutation = random_permutation(images.shape[0], rt.device)
            loss, stats = dmt_mixup_loss(model, images, labels, confidences, split, *gammas, args.labeled_weight,
                                         lam, permutation, rt.precision)
        stats.update(gamma1=torch.tensor(gammas[0]), gamma2=torch.tensor(gammas[1]))
        return loss, stats, images.shape[0]
    return step


def _pseudo_set(args: argparse.Namespace, transform) -> CifarDataset:
    path = pseudo_path(args)
    arrays = read_pseudo(path)
    if len(arrays.data) == 0:
        raise UserError(f"{path}: holds no pseudo-labelled image; label again with a larger --label-ratio")
    return CifarDataset(rows_to_images(arrays.data), arrays.targets, transform)


def build_batches(args: argparse.Namespace, rt: Runtime, dmt: bool) -> tuple[Callable, int, dict]:
    """(``batches(start)`` for the Trainer, iterations per epoch, dataset sizes for the config)."""
    kwargs = data_loader_kwargs(args.workers, rt.device)
    if not dmt:
        transform = train_transform(autoaugment=not args.ra, n=args.n, m_max=args.m)
        train_set = labelled_dataset(args.data_root, args.train_set, transform)
        stream = EpochStream(train_set, distributed.per_rank(args.batch_size, "--batch-size"), seed=args.seed,
                             **kwargs)
        return stream.iterate, len(stream), {"train_images": len(train_set)}
    transform = train_transform(autoaugment=args.aa, n=args.n, m_max=args.m)
    labelled_set = labelled_dataset(args.data_root, f"{args.train_set}_labeled", transform)
    pseudo_set = _pseudo_set(args, transform)
    labelled = EpochStream(labelled_set, distributed.per_rank(args.batch_size_labeled, "--batch-size-labeled"),
                           seed=args.seed, **data_loader_kwargs(min(args.workers, 2), rt.device))
    pseudo = EpochStream(pseudo_set, distributed.per_rank(args.batch_size_pseudo, "--batch-size-pseudo"),
                         seed=args.seed + PSEUDO_STREAM_SEED_OFFSET, **kwargs)
    sizes = {"labelled_images": len(labelled_set), "pseudo_images": len(pseudo_set),
             "pseudo_file": str(pseudo_path(args))}
    return (lambda start: paired_batches(pseudo, labelled, start)), len(pseudo), sizes


def build_model(args: argparse.Namespace, rt: Runtime) -> nn.Module:
    """A freshly initialised WRN-28-2 (weights from ``--continue-from`` if given), DDP-wrapped under torchrun."""
    model = wrn_28_2()
    if args.continue_from:
        load_model_weights(model, args.continue_from)
    model = distributed.wrap_model(model.to(device=rt.device, memory_format=rt.memory_format), rt.device)
    return torch.compile(model) if args.compile else model


def run_training(args: argparse.Namespace, rt: Runtime, dmt: bool) -> FitResult:
    files = options.run_files(args)
    batches, steps_per_epoch, sizes = build_batches(args, rt, dmt)
    total_steps = args.epochs * steps_per_epoch
    val_loader = evaluation_loader(args, rt)
    model = build_model(args, rt)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=MOMENTUM, weight_decay=args.weight_decay)
    scheduler = cosine_scheduler(optimizer, total_steps)
    ema = ModelEMA(model, args.ema_decay)
    step_fn = dmt_step(model, args, rt, total_steps) if dmt else supervised_step(model, args, rt)
    metric = options.metric_name(args)
    if rt.dist.is_main:
        save_config(files.config, {**vars(args), **sizes, "total_steps": total_steps,
                                   "steps_per_epoch": steps_per_epoch, "precision": rt.precision.mode,
                                   "world_size": rt.dist.world_size, "val_set": options.val_set_name(args)})
    logger = RunLogger(files.tb_dir, args.exp_name, enabled=rt.dist.is_main)
    trainer = Trainer(model=model, optimizer=optimizer, scheduler=scheduler, precision=rt.precision,
                      total_steps=total_steps, val_every=args.val_num_steps, logger=logger, device=rt.device,
                      snapshot_path=files.snapshot, resume_path=files.resume,
                      log_every=max(1, steps_per_epoch // 10), resume_every=args.resume_every, ema=ema,
                      snapshot_on_equal=dmt, initial_eval=dmt, metric_name=metric, desc=args.exp_name,
                      is_main=rt.dist.is_main)
    result = trainer.fit(batches, step_fn, lambda: evaluate(model, val_loader, rt))
    ema_value = evaluate(ema.module, val_loader, rt)[metric]
    logger.scalar(f"val/ema_{metric}", ema_value, result.steps)
    logger.close()
    if rt.dist.is_main:
        save_checkpoint(files.ema, model=ema.module)
        if args.do_not_save:
            files.snapshot.unlink(missing_ok=True)
            files.ema.unlink(missing_ok=True)
        finish_run(files.out_dir, files.log_file, args.exp_name, result.best, final=result.final, ema=ema_value,
                   val=options.val_set_name(args), metric=metric, iters=result.steps, **result.cost,
                   **(label_quality.log_fields(record_path(args)) if dmt else {}))  # the pass's pseudo-label quality
        trainer.cleanup()
        print(f"{args.exp_name}: best {metric} {result.best:.2f}, final {result.final:.2f}, EMA {ema_value:.2f} "
              f"({result.steps} iterations)", flush=True)
    return result
