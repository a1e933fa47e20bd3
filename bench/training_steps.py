"""The two training steps the speed benchmark compares, on synthetic batches (docs/method.md §3.1, §7.1).

* **reference** — the original 2020 loop (DST-CBC ``main.py: train``): NCHW; fp16 autocast +
  GradScaler on CUDA (fp32 on CPU, where fp16 autocast does not exist); no compile; cuDNN autotuning
  off (the original left ``cudnn.benchmark`` at its default); the batch comes from pageable host
  memory and images *and labels* are copied to the device every step; ``optimizer.zero_grad()``
  zero-fills; the logits are upsampled inside autocast, a training confusion matrix is updated and
  the loss statistics are read back with ``.item()`` **every step, before the backward pass** (the
  original's DynamicMutualLoss called ``.item()`` for loss/disagree/current_win/avg_weights; its
  confusion-matrix update indexed with a boolean mask). Each of these reads stalls the host until
  the GPU has finished the forward pass.
* **ours** — the project's own step: :func:`segmentation.training.dmt_step` /
  :func:`~segmentation.training.supervised_step` run by :class:`utils.trainer.Trainer` with the
  project's settings (channels_last and bf16 autocast on CUDA, cuDNN autotuning, pinned host batch
  and non-blocking copies, statistics summed on the device and read back once per logging interval,
  optional ``torch.compile``).

Both use the project's loss (:func:`utils.losses.dmt_loss`), optimizer
(:func:`segmentation.training.make_optimizer`) and poly schedule, so they compute the same thing;
only how it is run differs. ``tests/test_fast_step_equivalence.py`` checks that.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from segmentation.training import dmt_step, make_optimizer, supervised_step
from utils.amp import Precision
from utils.cli import Runtime
from utils.distributed import DistInfo
from utils.losses import IGNORE_INDEX, dmt_loss, supervised_loss
from utils.metrics import ConfusionMatrix
from utils.run_log import RunLogger
from utils.runtime import configure_backends
from utils.schedules import poly_scheduler
from utils.trainer import Trainer, backward_step

LR = 0.001                 # docs/method.md §7.1 (VOC phases); the value does not change the speed
WEIGHT_DECAY = 5e-4
SCHEDULE_STEPS = 1_000_000  # the poly schedule never reaches 0 within a benchmark
NEVER = 10**12             # validation interval that never triggers inside a benchmark


@dataclass(frozen=True)
class StepConfig:
    """One step kind: ``pseudo`` > 0 makes it a DMT step [pseudo; labelled], else supervised."""

    num_classes: int
    crop: tuple[int, int]
    labelled: int
    pseudo: int = 0
    gamma: tuple[float, float] = (0.0, 0.0)
    log_every: int = 1      # the project's logging interval ⌊steps per epoch / 10⌋ (docs/method.md §9.1)

    @property
    def dmt(self) -> bool:
        return self.pseudo > 0

    @property
    def batch(self) -> int:
        return self.labelled + self.pseudo


def synthetic_batch(cfg: StepConfig, seed: int = 0, ignore_fraction: float = 0.1) -> Any:
    """A host batch shaped like the loaders' (docs/method.md §2.1, §3.1): supervised ``(images, labels)``;
    DMT ``((pseudo images, pseudo labels, confidences), (labelled images, labels))``. Labels are random
    classes with ``ignore_fraction`` of 255, confidences uniform in [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.crop

    def labels(n: int) -> torch.Tensor:
        lab = torch.randint(0, cfg.num_classes, (n, h, w), generator=g)
        return lab.masked_fill(torch.rand(n, h, w, generator=g) < ignore_fraction, IGNORE_INDEX)

    def images(n: int) -> torch.Tensor:
        return torch.randn(n, 3, h, w, generator=g)

    if not cfg.dmt:
        return images(cfg.labelled), labels(cfg.labelled)
    pseudo_labels = labels(cfg.pseudo)
    confidences = torch.rand(cfg.pseudo, h, w, generator=g)
    return (images(cfg.pseudo), pseudo_labels, confidences), (images(cfg.labelled), labels(cfg.labelled))


def pin(batch: Any) -> Any:
    """Page-locked copy of every tensor (what the project's DataLoader does with pin_memory on CUDA)."""
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory()
    return type(batch)(pin(b) for b in batch)


def loss_for(cfg: StepConfig):
    """DMT: ``loss(logits, labels, confidences, num_pseudo)``; supervised: ``loss(logits, labels)``."""
    if not cfg.dmt:
        return supervised_loss
    return lambda logits, labels, confidences, num_pseudo: dmt_loss(logits, labels, confidences, num_pseudo,
                                                                    *cfg.gamma)


def optimizer_and_schedule(model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    optimizer = make_optimizer(model, SimpleNamespace(lr=LR, weight_decay=WEIGHT_DECAY))
    return optimizer, poly_scheduler(optimizer, SCHEDULE_STEPS)


# --------------------------------------------------------------------------------- reference
def reference_precision(device: torch.device) -> Precision:
    """fp16 autocast + GradScaler on CUDA (the original's ``--mixed-precision``); fp32 on CPU."""
    return Precision("fp16" if device.type == "cuda" else "fp32", device)


@contextlib.contextmanager
def backend_flags(device: torch.device, fast: bool) -> Iterator[None]:
    """CUDA backend switches for one variant, restored afterwards: the project's
    (:func:`utils.runtime.configure_backends`: cuDNN autotuning, TF32) or torch's defaults, which
    the original ran with (no autotuning, no TF32 matmuls)."""
    if device.type != "cuda":
        yield
        return
    b = torch.backends
    saved = (b.cudnn.benchmark, b.cudnn.deterministic, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32)
    try:
        if fast:
            configure_backends(device)
        else:
            b.cudnn.benchmark, b.cudnn.deterministic, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = \
                False, False, True, False
        yield
    finally:
        b.cudnn.benchmark, b.cudnn.deterministic, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = saved


class ReferenceLoop:
    """The original's training iteration (see the module docstring), ``run(n)`` times."""

    def __init__(self, model: nn.Module, cfg: StepConfig, device: torch.device,
                 precision: Precision | None = None) -> None:
        self.model, self.cfg, self.device = model, cfg, device
        self.precision = precision or reference_precision(device)
        self.optimizer, self.scheduler = optimizer_and_schedule(model)
        self.loss_fn = loss_for(cfg)
        self.train_matrix = ConfusionMatrix(cfg.num_classes, device)  # the original's per-epoch train mIoU
        self.running: dict[str, float] = {}  # the original's running_stats (summed every step)
        self.last_loss: torch.Tensor | None = None  # the loss that was back-propagated (on the device)
        self.last_stats: dict[str, float] = {}

    def step(self, batch: Any) -> None:
        cfg = self.cfg
        split = None
        if cfg.dmt:  # formatted and concatenated on the host, as the original did
            (p_images, p_labels, p_confidences), (l_images, l_labels) = batch
            targets = torch.cat([torch.stack([p_labels.float(), p_confidences], dim=1),
                                 torch.stack([l_labels.float(), torch.ones(l_labels.shape)], dim=1)])
            inputs, labels = torch.cat([p_images, l_images]), targets[:, 0].long()
            targets, split = targets.to(self.device), p_images.shape[0]
        else:
            inputs, labels = batch
        inputs, labels = inputs.to(self.device), labels.to(self.device)
        self.optimizer.zero_grad(set_to_none=False)
        with self.precision.autocast():
            outputs = F.interpolate(self.model(inputs), size=cfg.crop, mode="bilinear", align_corners=True)
            self.train_matrix.update(labels, outputs.argmax(1))  # boolean-mask indexing: a host sync
            if cfg.dmt:
                loss, stats = self.loss_fn(outputs, targets[:, 0].round().long(), targets[:, 1], split)
            else:
                loss, stats = self.loss_fn(outputs, labels)
            stats = {key: value.item() for key, value in stats.items() if value.dim() == 0}  # read back every step
        backward_step(loss, self.optimizer, self.precision.scaler)
        self.scheduler.step()
        self.last_loss, self.last_stats = loss.detach(), stats
        for key, value in stats.items():
            self.running[key] = self.running.get(key, 0.0) + value

    def run(self, batch: Any, iterations: int) -> None:
        for _ in range(iterations):
            self.step(batch)


# --------------------------------------------------------------------------------- ours
class CapturingLogger(RunLogger):
    """A RunLogger that keeps the scalars in memory (``values[tag] = [(step, value), ...]``)."""

    def __init__(self) -> None:
        super().__init__(os.devnull, "bench", enabled=False)
        self.values: dict[str, list[tuple[int, float]]] = {}

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.values.setdefault(tag, []).append((step, float(value)))


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No tqdm bar from the Trainer while benchmarking (``DMT_NO_PROGRESS=1``), restored afterwards."""
    old = os.environ.get("DMT_NO_PROGRESS")
    os.environ["DMT_NO_PROGRESS"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DMT_NO_PROGRESS", None)
        else:
            os.environ["DMT_NO_PROGRESS"] = old


class ProjectLoop:
    """The project's step (``dmt_step`` / ``supervised_step``) in :class:`utils.trainer.Trainer`.

    ``model`` is what the Trainer runs (possibly ``torch.compile``-d); the optimizer and schedule
    are the project's, created once so that successive ``run`` calls continue one schedule.
    """

    def __init__(self, model: nn.Module, cfg: StepConfig, rt: Runtime, params_of: nn.Module | None = None) -> None:
        self.model, self.cfg, self.rt = model, cfg, rt
        self.optimizer, self.scheduler = optimizer_and_schedule(params_of if params_of is not None else model)
        loss_fn = loss_for(cfg)
        self.step_fn = dmt_step(model, loss_fn, rt, online=False) if cfg.dmt else supervised_step(model, loss_fn, rt)
        self.logger = CapturingLogger()

    def run(self, batch: Any, iterations: int) -> Trainer | None:
        if iterations < 1:
            return None
        trainer = Trainer(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                          precision=self.rt.precision, total_steps=iterations, val_every=NEVER,
                          logger=self.logger, device=self.rt.device, snapshot_path=None, resume_path=None,
                          log_every=self.cfg.log_every, desc="bench", is_main=True)
        with quiet_progress():
            trainer.fit(lambda _start: itertools.repeat(batch), self.step_fn, lambda: {"metric": 0.0})
        return trainer

    def last_logged(self) -> dict[str, float]:
        """The statistics the Trainer logged last (means over its last logging interval)."""
        return {tag.split("/", 1)[1]: values[-1][1] for tag, values in self.logger.values.items()
                if tag.startswith("train/") and tag != "train/lr"}


def project_runtime(device: torch.device, precision: Precision, memory_format: torch.memory_format) -> Runtime:
    return Runtime(device, DistInfo(), precision, memory_format)


# --------------------------------------------------------------------------------- measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(run_one_step: Callable[[], Any]) -> int:
    """Model FLOPs of one step (forward + backward; convolutions and matmuls, as MFU counts them)."""
    with FlopCounterMode(display=False) as counter:
        run_one_step()
    return int(counter.get_total_flops())

