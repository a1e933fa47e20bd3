"""Training WRN-28-2 on CIFAR-10: the supervised mixup baseline (``main_fs``) and DMT / curriculum
labelling (``main_dmt``), docs/method.md §1.2, §3.3, §7.2.

* **Baseline** (``main_fs --state 1``): batches of ``--batch-size`` from ``--train-set``;
  λ ~ Beta(α, α) (no max step), loss = λ·CE(y) + (1−λ)·CE(y_π); plain CE without ``--alpha``.
* **DMT** (``main_dmt``): step s takes batch s of the pseudo stream (``<train-set>_pseudo``, which
  defines the epoch) and batch s of the labelled stream (``<train-set>_labeled``, restarted when
  exhausted) as one batch [pseudo; labelled] (:func:`dmt_mixup_loss`):

  1. a no-grad forward of the net in **train mode** (it updates the BN statistics) on the un-mixed
     batch, outside autocast, gives the weights of docs/method.md §3.1 with c = the stored teacher confidence;
     labelled samples get ``--labeled-weight``; with γ1 = γ2 = 0 (CL) every pseudo weight is 1 and
     the forward still runs, as in the original;
  2. λ ~ Beta(α, α), λ ← max(λ, 1−λ); one permutation π of the whole batch mixes the images and
     the weights (pseudo and labelled samples mix);
  3. loss = (1/N) Σ w̃_n [λ·CE(f(x̃_n), y_n) + (1−λ)·CE(f(x̃_n), y_π(n))], hard labels;
  4. γ_j = γ_j⁰·exp(−5(1 − t/T)²) at iteration t (``--ramp-off-by-one``: the original's counter,
     iteration 1 uses the full γ⁰).

  ``--alpha -1`` trains without mixup on the DMT loss of docs/method.md §3.1 (weights from the training
  forward itself, γ not ramped), which the scripts never use.
* Both: a fresh network (weights from ``--continue-from`` only), SGD (momentum 0.9), cosine lr per
  iteration over epochs × len(the epoch-defining loader), an EMA of the weights after every step
  (``--ema-decay``), validation every ``--val-num-steps`` iterations (docs/method.md §8 schedule) on the
  test set or ``--valtiny``. DMT evaluates the initial net first, saves it as the first best and
  replaces it on ``>=``; the baseline snapshots on strictly better.
* The loop, snapshots, resume checkpoints and TensorBoard scalars are :class:`utils.trainer.Trainer`'s.
* Under torchrun the batch flags stay global: the processes split the global [pseudo; labelled]
  batch (496 + 16 over 4: 128 each), each knowing which of its rows are pseudo-labelled; λ and π
  are rank 0's draws and π permutes the whole global batch (the partners' images, labels and
  weights are gathered on the device), the loss is divided by the global N, and the BN statistics
  of both forwards are averaged over the processes: one process's step on the same batch.

Outputs: ``<exp>.pt`` (best snapshot), ``<exp>--ema.pt`` (the EMA, model only), ``<exp>_cfg.json``,
TensorBoard ``train/{loss, weighted_loss, accuracy, disagree, current_win, avg_weights, gamma1,
gamma2, lr}`` and ``val/{accuracy, fine_grained}``, and one ``<log>.txt`` line ``<exp>: <best> |
final=… | ema=… | …``.
"""
from __future__ import annotations

import argparse
import copy
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import default_collate

from classification import batch_augment
from classification.augment import train_transform
from classification.cifar import IMAGE_SIZE, NUM_CLASSES, labelled_dataset, pseudo_dataset
from classification.evaluation import evaluate, evaluation_loader
from classification.models import build_backbone
from classification.run_config import RunConfig
from utils import distributed, label_quality
from utils.checkpoint import load_model_weights, save_checkpoint, unwrap
from utils.cli import Runtime, data_loader_kwargs
from utils.losses import (batch_mean, classification_weights, dmt_loss, gamma_ramp, global_stats, mix,
                          mixup_weighted_ce, sample_lambda)
from utils.run_log import RunLogger, finish_run, save_config
from utils.schedules import SGD_MOMENTUM, cosine_scheduler
from utils.trainer import (EpochStream, FitResult, Trainer, average_bn_statistics_, gather_shares, paired_batches,
                           rank_share, rank_world, to_device)

PSEUDO_STREAM_SEED_OFFSET = 7919  # the pseudo stream's shuffling/augmentation seed differs from the labelled one's


def draw_lambda(alpha: float, keep_max: bool) -> float:
    """λ ~ Beta(α, α) (numpy), λ = 1 for α ≤ 0 as the original's mixup_data."""
    return sample_lambda(alpha, keep_max) if alpha > 0 else 1.0


def mixup_accuracy(logits: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam,
                   global_size: int | None = None) -> torch.Tensor:
    """The original's training accuracy ×100: λ·[pred = y] + (1−λ)·[pred = y_π], averaged over the
    global batch (:func:`utils.losses.batch_mean`)."""
    predicted = logits.detach().argmax(dim=1)
    return batch_mean(lam * (predicted == labels_a).float() + (1 - lam) * (predicted == labels_b).float(),
                      global_size) * 100


class ModelEMA:
    """An exponential moving average of the weights (docs/method.md §7.2), updated by the Trainer
    after every step: ``shadow ← decay·shadow + (1 − decay)·θ``; buffers (BN statistics) copied.
    The original inverted the update (shadow ← 0.001·shadow + 0.999·θ for its "decay 0.999",
    docs/method.md §11.3): its "EMA" is the last iterate in effect, ``ModelEMA(model, decay=0.001)``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        source = unwrap(model)
        params = [p.detach() for p in source.parameters()]
        torch._foreach_lerp_(list(self.module.parameters()), params, 1.0 - self.decay)
        torch._foreach_copy_(list(self.module.buffers()), list(source.buffers()))  # one multi-tensor copy

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


class Share:
    """This rank's share of a step's global batch of ``global_size`` samples (None in a single
    process, where the share is the whole batch): every rank's size and this rank's slice."""

    def __init__(self, global_size: int) -> None:
        rank, world = rank_world()
        self.global_size = global_size
        self.sizes = [hi - lo for lo, hi in (rank_share(global_size, r, world) for r in range(world))]
        self.start, self.stop = rank_share(global_size, rank, world)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The global batch's rows of ``x`` (this rank's share) from every rank, in batch order."""
        return gather_shares(x, self.sizes)


def share_of(global_size: int) -> Share | None:
    return Share(global_size) if rank_world()[1] > 1 else None


def shared_mixup_draws(alpha: float, keep_max: bool, size: int, device: torch.device, share: Share | None):
    """λ ~ Beta(α, α) and one permutation π of the whole global batch. Every rank draws (so that
    its RNG advances as in one process); under torchrun rank 0's draws are broadcast, so that every
    rank mixes the global batch alike (λ then stays a 0-d tensor on the device: no host sync)."""
    lam, permutation = draw_lambda(alpha, keep_max), torch.randperm(size, device=device)
    if share is None:
        return lam, permutation
    lam = torch.tensor(lam, dtype=torch.float64, device=device)
    dist.broadcast(lam, src=0)
    dist.broadcast(permutation, src=0)
    return lam, permutation


def mixup_forward(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, lam, permutation: torch.Tensor,
                  precision, weights: torch.Tensor | None = None, share: Share | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward the mixed batch λx + (1−λ)x_π (under autocast); loss (1/N) Σ w̃ [λ·CE(y) + (1−λ)·CE(y_π)]
    with w̃ = λw + (1−λ)w_π (all 1 without ``weights``). Stats: the unweighted ``loss`` and ``accuracy``.

    Under torchrun (``share``) the arguments are this rank's rows and π permutes the global batch:
    x_π, y_π and w_π come from the rows of every rank (gathered on the device), and this rank
    forwards its own rows of the mixed global batch."""
    if share is None:
        mixed_images = mix(images, lam, permutation)
        labels_b = labels[permutation]
        mixed_weights = None if weights is None else mix(weights, lam, permutation)
        global_size = None
    else:
        partner = permutation[share.start:share.stop]
        mixed_images = lam * images + (1.0 - lam) * share.gather(images)[partner]
        labels_b = share.gather(labels)[partner]
        mixed_weights = None if weights is None else lam * weights + (1.0 - lam) * share.gather(weights)[partner]
        global_size = share.global_size
    with torch.autocast(**precision.autocast_kwargs):
        logits = model(mixed_images)
    average_bn_statistics_(model, mixed_images.shape[0])  # the ranks' BN stay one model
    loss = mixup_weighted_ce(logits, labels, labels_b, lam, mixed_weights, global_size)
    means = {"accuracy": mixup_accuracy(logits, labels, labels_b, lam, global_size)}
    if weights is not None:
        means["loss"] = mixup_weighted_ce(logits.detach(), labels, labels_b, lam, None, global_size)
        means["weighted_loss"] = loss.detach()
    return loss, global_stats({}, means)


def dmt_mixup_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, confidences: torch.Tensor,
                   split_index: int, gamma1: float, gamma2: float, labeled_weight: float, lam,
                   permutation: torch.Tensor, precision, share: Share | None = None,
                   weights_model: nn.Module | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """docs/method.md §3.3 steps 1–3 for a given λ and permutation (``images`` = [pseudo; labelled], hard
    ``labels``, teacher ``confidences`` with 1 for the labelled samples; under torchrun this rank's
    rows of the global batch, ``split_index`` its number of pseudo-labelled rows). ``weights_model``
    runs the weights forward (default: the unwrapped ``model``; :func:`dmt_step` passes it, under
    ``--compile`` its compiled version)."""
    with torch.no_grad():  # train mode, fp32: updates the BN running statistics, as the original
        probs = (weights_model if weights_model is not None else unwrap(model))(images).float().softmax(dim=1)
    # every rank's BN update counts (outside DDP, rank 0's alone would survive its next forward)
    average_bn_statistics_(model, images.shape[0])
    weights, stats = classification_weights(probs, labels, confidences.float(), split_index, gamma1, gamma2,
                                            labeled_weight)
    loss, mix_stats = mixup_forward(model, images, labels, lam, permutation, precision, weights, share)
    return loss, {**stats, **mix_stats}


def label_and_confidence(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hard labels int64, confidences) of a batch of soft labels (N, C): argmax and max (docs/method.md §2.2)."""
    confidence, label = probs.max(dim=-1)
    return label, confidence


def supervised_step(model: nn.Module, args: argparse.Namespace, rt: Runtime,
                    global_size: Callable[[int], int] | None = None) -> Callable:
    """main_fs: mixup with λ ~ Beta(α, α) (no max step), or plain CE without ``--alpha``.
    ``global_size(step)``: the size of step's global batch (needed under torchrun)."""
    def step(batch, step_number: int):
        images, labels = batch
        images, labels = to_device(images, rt.device, rt.memory_format), labels.to(rt.device, non_blocking=True)
        share = share_of(global_size(step_number - 1)) if global_size is not None else None
        size = images.shape[0] if share is None else share.global_size
        if args.alpha is None:
            lam, permutation = 1.0, torch.arange(size, device=rt.device)
        else:
            lam, permutation = shared_mixup_draws(args.alpha, False, size, rt.device, share)
        loss, stats = mixup_forward(model, images, labels, lam, permutation, rt.precision, share=share)
        return loss, stats, images.shape[0]
    return step


def dmt_step(model: nn.Module, args: argparse.Namespace, rt: Runtime, total_steps: int,
             global_size: Callable[[int], int] | None = None) -> Callable:
    """main_dmt: one [pseudo; labelled] batch, docs/method.md §3.3 (mixup) or §3.1 (``--alpha -1``).
    Under torchrun the batch is this rank's share of it (``global_size(step)``: the global size)."""
    weights_model = torch.compile(unwrap(model)) if getattr(args, "compile", False) else unwrap(model)

    def step(batch, step_number: int):
        (p_images, p_probs), (l_images, l_labels) = batch
        split = p_images.shape[0]
        # each (pinned) part is copied on its own and concatenated on the device: a host-side cat
        # would make a pageable tensor, whose copy synchronises
        images = torch.cat([p_images.to(rt.device, non_blocking=True), l_images.to(rt.device, non_blocking=True)])
        images = images.contiguous(memory_format=rt.memory_format)
        p_labels, p_confidences = label_and_confidence(p_probs.to(rt.device, non_blocking=True))
        labels = torch.cat([p_labels, l_labels.to(rt.device, non_blocking=True)])
        confidences = torch.cat([p_confidences, torch.ones(l_labels.shape[0], device=rt.device)])
        share = share_of(global_size(step_number - 1)) if global_size is not None else None
        if args.alpha == -1:
            gammas = (args.gamma1, args.gamma2)
            with torch.autocast(**rt.precision.autocast_kwargs):
                logits = model(images)
            average_bn_statistics_(model, images.shape[0])
            loss, stats = dmt_loss(logits, labels, confidences, split, args.gamma1, args.gamma2)
            accuracy = mixup_accuracy(logits, labels, labels, 1.0, None if share is None else share.global_size)
            stats = {**stats, **global_stats({}, {"accuracy": accuracy})}
        else:
            gammas = tuple(gamma_ramp(g, step_number, total_steps, fix_first_step=not args.ramp_off_by_one)
                           for g in (args.gamma1, args.gamma2))
            size = images.shape[0] if share is None else share.global_size
            lam, permutation = shared_mixup_draws(args.alpha, True, size, rt.device, share)
            loss, stats = dmt_mixup_loss(model, images, labels, confidences, split, *gammas, args.labeled_weight,
                                         lam, permutation, rt.precision, share, weights_model)
        stats.update(gamma1=torch.tensor(gammas[0]), gamma2=torch.tensor(gammas[1]))
        return loss, stats, images.shape[0]
    return step


class ShareCollate:
    """torch's default collate of this rank's items of one part; no item (a global batch split over
    more processes than it has samples of that part) gives empty tensors: images 0×3×32×32, soft
    labels 0×10 (pseudo) or labels 0 (int64)."""

    def __init__(self, pseudo: bool) -> None:
        self.pseudo = pseudo

    def __call__(self, items):
        if items:
            return default_collate(items)
        target = torch.zeros(0, NUM_CLASSES) if self.pseudo else torch.zeros(0, dtype=torch.long)
        return torch.zeros(0, 3, IMAGE_SIZE, IMAGE_SIZE), target


def build_batches(cfg: RunConfig, rt: Runtime) -> tuple[Callable, int, dict, Callable]:
    """(``batches(start)`` for the Trainer, iterations per epoch, dataset sizes for the config,
    ``global_size(step)``: the size of global batch ``step``). Batch flags are global batches."""
    args, dmt = cfg.args, cfg.task == "dmt"
    kwargs = data_loader_kwargs(args.workers, rt.device)
    randaugment = args.ra if not dmt else not args.aa
    augmenter = (batch_augment.BatchRandAugment(rt.device, args.n, args.m)  # --device-augment / CUDA default
                 if batch_augment.resolve(args, rt.device, randaugment) else None)
    transform = None if augmenter else train_transform(autoaugment=not randaugment, n=args.n, m_max=args.m)
    if not dmt:
        train_set, collate = batch_augment.for_loader(labelled_dataset(args.data_root, cfg.train_file.name, transform),
                                                      augmenter)
        stream = EpochStream(train_set, args.batch_size, seed=args.seed, collate_fn=collate or ShareCollate(False),
                             **kwargs)
        return (batch_augment.on_device(stream.iterate, augmenter), len(stream),
                {"train_images": len(train_set), "device_augment": bool(augmenter)}, stream.batches.size)
    labelled_set, labelled_collate = batch_augment.for_loader(
        labelled_dataset(args.data_root, cfg.train_file.name, transform), augmenter)
    pseudo_set, pseudo_collate = batch_augment.for_loader(pseudo_dataset(cfg.pseudo_file, transform), augmenter)
    labelled = EpochStream(labelled_set, args.batch_size_labeled, seed=args.seed,
                           collate_fn=labelled_collate or ShareCollate(False),
                           **data_loader_kwargs(min(args.workers, 2), rt.device))
    pseudo = EpochStream(pseudo_set, args.batch_size_pseudo, seed=args.seed + PSEUDO_STREAM_SEED_OFFSET,
                         collate_fn=pseudo_collate or ShareCollate(True), **kwargs)
    sizes = {"labelled_images": len(labelled_set), "pseudo_images": len(pseudo_set),
             "pseudo_file": str(cfg.pseudo_file), "device_augment": bool(augmenter)}
    return (batch_augment.on_device(lambda start: paired_batches(pseudo, labelled, start), augmenter), len(pseudo),
            sizes, lambda step: pseudo.batches.size(step) + labelled.batches.size(step))


def build_model(args: argparse.Namespace, rt: Runtime) -> nn.Module:
    """A freshly initialised ``--backbone`` network (WRN-28-2 by default; weights from ``--continue-from``
    if given), DDP-wrapped under torchrun."""
    model = build_backbone(args.backbone)
    if args.continue_from:
        load_model_weights(model, args.continue_from)
    model = distributed.wrap_model(model.to(device=rt.device, memory_format=rt.memory_format), rt.device)
    return torch.compile(model) if args.compile else model


def run_training(cfg: RunConfig, rt: Runtime) -> FitResult:
    args, files, dmt = cfg.args, cfg.files, cfg.task == "dmt"
    batches, steps_per_epoch, sizes, global_size = build_batches(cfg, rt)
    total_steps = args.epochs * steps_per_epoch
    val_loader = evaluation_loader(cfg, rt)
    model = build_model(args, rt)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=SGD_MOMENTUM, weight_decay=args.weight_decay,
                                fused=True if rt.device.type == "cuda" else None)  # fused: fp16 GradScaler without a per-step sync
    scheduler = cosine_scheduler(optimizer, total_steps)
    ema = ModelEMA(model, args.ema_decay)
    step_fn = (dmt_step(model, args, rt, total_steps, global_size) if dmt
               else supervised_step(model, args, rt, global_size))
    metric = cfg.metric
    if rt.dist.is_main:
        save_config(files.config, {**vars(args), **sizes, "total_steps": total_steps,
                                   "steps_per_epoch": steps_per_epoch, "precision": rt.precision.mode,
                                   "world_size": rt.dist.world_size, "val_set": cfg.val_set})
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
                   val=cfg.val_set, metric=metric, iters=result.steps, **result.cost,
                   **(label_quality.log_fields(cfg.pseudo_record) if dmt else {}))  # the pass's pseudo-label quality
        trainer.cleanup()
        print(f"{args.exp_name}: best {metric} {result.best:.2f}, final {result.final:.2f}, EMA {ema_value:.2f} "
              f"({result.steps} iterations)", flush=True)
    return result
