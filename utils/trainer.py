"""The training loop shared by segmentation and classification.

One loop does, for both applications: mixed precision (through :class:`utils.amp.Precision`),
LR scheduling per iteration, optional EMA, device-side statistics read back only at logging
intervals (no host sync per step), validation on the original's schedule, best-snapshot saving,
periodic resume checkpoints (model, optimizer, scheduler, scaler, step, RNG, best metric, EMA) and a
tqdm progress bar. What a step computes is the caller's ``step_fn``; how the model is evaluated is the
caller's ``evaluate``.

Statistics: a 0-d stat is averaged over a logging interval and logged as ``train/<name>``; a 1-D
stat holds the counts of equal-width bins over [0, 1] (e.g. ``weights_hist``, :func:`utils.losses.weight_stats`),
is summed over the interval and logged as a TensorBoard histogram ``train/<name>``.

Validation schedule (docs/method.md §8): after step ``s`` (1-based) when ``s % val_every == val_every - 1`` or
``s == total_steps - 1``. A snapshot is saved when the metric is strictly better (``>=`` with
``snapshot_on_equal``, as the original classification DMT program). The model is evaluated once more
after the last step: that *final* metric is reported beside the best one but does not compete for
the snapshot, so the snapshot selection stays the original's.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn
from tqdm import tqdm

from utils.checkpoint import load_checkpoint, save_checkpoint, unwrap
from utils.cost import CostMeter
from utils.errors import UserError
from utils.run_log import RunLogger
from utils.runtime import rank_rng_states, set_rank_rng_state

StepFn = Callable[[Any, int], tuple[torch.Tensor, Mapping[str, torch.Tensor], int]]
EvalFn = Callable[[], Mapping[str, float]]


@dataclass
class FitResult:
    best: float
    final: float
    steps: int
    cost: dict[str, object] = field(default_factory=dict)


def progress(iterable=None, **kwargs):
    """tqdm that stays quiet off the main rank and prints sparsely when stderr is not a terminal."""
    from utils.distributed import is_main
    tty = sys.stderr.isatty() or os.environ.get("DMT_TTY") == "1"  # under utils.torchrun stderr is a pipe
    kwargs.setdefault("mininterval", 0.5 if tty else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not is_main() or os.environ.get("DMT_NO_PROGRESS") == "1", **kwargs)


class Trainer:
    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, precision,
                 total_steps: int, val_every: int, logger: RunLogger, device: torch.device,
                 snapshot_path: str | os.PathLike | None, resume_path: str | os.PathLike | None,
                 log_every: int = 0, resume_every: int = 0, ema=None, snapshot_on_equal: bool = False,
                 initial_eval: bool = False, metric_name: str = "metric", desc: str = "train",
                 is_main: bool = True, post_step: Callable[[int], None] | None = None) -> None:
        if total_steps < 1:
            raise UserError(f"{desc}: the run has {total_steps} iterations; raise --epochs or add data")
        self.model, self.optimizer, self.scheduler, self.precision = model, optimizer, scheduler, precision
        self.total_steps, self.val_every = total_steps, max(1, val_every)
        self.log_every = log_every if log_every > 0 else max(1, total_steps // 100)
        self.resume_every = resume_every
        self.logger, self.device, self.ema = logger, device, ema
        self.snapshot_path = Path(snapshot_path) if snapshot_path else None
        self.resume_path = Path(resume_path) if resume_path else None
        self.snapshot_on_equal, self.initial_eval = snapshot_on_equal, initial_eval
        self.metric_name, self.desc, self.is_main = metric_name, desc, is_main
        # called with the step number after the optimizer step, before the LR step; not called when
        # the fp16 GradScaler skipped the step for inf/NaN gradients (the LR scheduler still steps)
        self.post_step = post_step
        self.best = -math.inf
        self.step = 0

    # ------------------------------------------------------------------ checkpoints
    def _save_snapshot(self) -> None:
        if self.is_main and self.snapshot_path is not None:
            save_checkpoint(self.snapshot_path, model=self.model, optimizer=self.optimizer,
                            scheduler=self.scheduler, best_metric=self.best, step=self.step)

    def _save_resume(self) -> None:
        if self.resume_path is None:
            return
        rng = rank_rng_states()  # a collective: every rank takes part, rank 0 writes
        if self.is_main:
            extra = {"ema": self.ema.state_dict()} if self.ema is not None else {}
            save_checkpoint(self.resume_path, model=self.model, optimizer=self.optimizer,
                            scheduler=self.scheduler, scaler=self.precision.scaler, step=self.step,
                            best_metric=self.best, rng=rng, extra=extra)

    def _try_resume(self) -> None:
        if self.resume_path is None or not self.resume_path.is_file():
            return
        state = load_checkpoint(self.resume_path, map_location=self.device)
        if "step" not in state or state.get("optimizer") is None:
            raise UserError(f"{self.resume_path}: not a resume checkpoint; delete it to restart the run")
        try:
            unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["lr_scheduler"])
            if state.get("scaler") is not None:
                self.precision.scaler.load_state_dict(state["scaler"])
            if self.ema is not None and "ema" in state.get("extra", {}):
                self.ema.load_state_dict(state["extra"]["ema"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(f"{self.resume_path}: resume checkpoint does not fit this run ({exc.__class__.__name__}); "
                            "delete it to restart the run") from exc
        self.step = int(state["step"])
        self.best = float(state.get("best_metric", -math.inf))
        if state.get("rng") is not None:
            set_rank_rng_state(state["rng"])
        if self.is_main:
            print(f"{self.desc}: resuming at iteration {self.step}/{self.total_steps} from {self.resume_path}",
                  file=sys.stderr, flush=True)

    def cleanup(self) -> None:
        """Remove the resume checkpoint once the run's outputs are complete and recorded."""
        if self.is_main and self.resume_path is not None and self.resume_path.exists():
            self.resume_path.unlink()

    # ------------------------------------------------------------------ loop
    def _check_finite(self, finite: torch.Tensor) -> None:
        if not bool(finite):
            raise UserError(f"{self.desc}: non-finite loss by iteration {self.step} (precision {self.precision.mode}); "
                            "nothing was saved from this point on: lower --lr, or use fp32 (no --mixed-precision) "
                            "or --amp-dtype bf16, then rerun (the run resumes from its last checkpoint)")

    def _validate(self, evaluate: EvalFn, compete: bool) -> float:
        self.model.eval()
        try:
            metrics = dict(evaluate())
        finally:
            self.model.train()
        value = float(metrics[self.metric_name])
        self.logger.scalars(metrics, self.step, prefix="val/")
        if compete and (value > self.best or (self.snapshot_on_equal and value >= self.best)):
            self.best = value
            self._save_snapshot()
        return value

    def fit(self, batches: Callable[[int], Iterator[Any]], step_fn: StepFn, evaluate: EvalFn) -> FitResult:
        """Train ``total_steps`` iterations; ``batches(start)`` yields the batches from step ``start``."""
        self._try_resume()
        cost = CostMeter(self.device)
        self.model.train()
        if self.initial_eval and self.step == 0:
            self._validate(evaluate, compete=True)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        last_val = None
        stream = batches(self.step)
        bar = progress(total=self.total_steps, initial=self.step, desc=self.desc, unit="it")
        while self.step < self.total_steps:
            batch = next(stream)
            self.step += 1
            self.optimizer.zero_grad(set_to_none=True)
            loss, stats, images = step_fn(batch, self.step)
            finite &= torch.isfinite(loss.detach())
            stepped = self.precision.step(loss, self.optimizer)
            if self.post_step is not None and stepped:  # skipped with the scaler's skipped step (fp16)
                self.post_step(self.step)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            cost.add(images)
            for key, value in {"loss": loss.detach(), **stats}.items():
                sums[key] = sums[key] + value.detach().float() if key in sums else value.detach().float()
            count += 1
            bar.update(1)
            if self.step % self.log_every == 0 or self.step == self.total_steps:
                self._check_finite(finite)  # the one host sync of a logging interval
                means = {k: float(v) / count for k, v in sums.items() if v.dim() == 0}
                self.logger.scalars(means, self.step, prefix="train/")
                for key, counts in sums.items():  # 1-D stats: bin counts over [0, 1], summed over the interval
                    if counts.dim() == 1:
                        self.logger.histogram(f"train/{key}", counts, self.step)
                self.logger.scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
                bar.set_postfix(loss=f"{means['loss']:.4f}", refresh=False)
                sums, count = {}, 0
            validate = self.step % self.val_every == self.val_every - 1 or self.step == self.total_steps - 1
            if validate or (self.resume_every and self.step % self.resume_every == 0):
                self._check_finite(finite)  # never snapshot or checkpoint diverged weights
            if validate:
                last_val = self._validate(evaluate, compete=True)
                bar.set_postfix(**{self.metric_name: f"{last_val:.2f}", "best": f"{self.best:.2f}"}, refresh=False)
                self._save_resume()
            elif self.resume_every and self.step % self.resume_every == 0:
                self._save_resume()
        bar.close()
        final = self._validate(evaluate, compete=False)
        if self.best == -math.inf:  # no validation point fell inside a very short run
            self.best = final
            self._save_snapshot()
        self._save_resume()
        self.logger.flush()
        return FitResult(best=self.best, final=final, steps=self.step, cost=cost.fields())
