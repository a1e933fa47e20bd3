"""Atomic checkpoints with the full training state, and loading with clear errors.

Two kinds of file, one format (a dict saved with ``torch.save``):

* a **snapshot** (``<exp>.pt``): the original's ``{model, optimizer, lr_scheduler}`` keys, so the
  files stay interchangeable with the 2020 code's, plus ``format``;
* a **resume checkpoint** (``<exp>.resume.pt``): additionally ``scaler``, ``step``, ``best_metric``,
  ``rng`` and ``extra`` (anything a loop needs to continue exactly where it stopped).

Every write goes to a temporary name and is renamed into place, so a killed process never leaves a
truncated checkpoint behind.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from utils.errors import UserError
from utils.io import atomic_path

FORMAT = "dmt-checkpoint-v1"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module, optimizer=None, scheduler=None,
                    scaler=None, step: int | None = None, best_metric: float | None = None,
                    rng: Any = None, extra: Mapping[str, Any] | None = None) -> None:
    """Save atomically. Only the arguments given are stored (``None`` entries are kept as None)."""
    state: dict[str, Any] = {
        "format": FORMAT,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "lr_scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if step is not None:
        state["step"] = int(step)
    if best_metric is not None:
        state["best_metric"] = float(best_metric)
    if rng is not None:
        state["rng"] = rng
    if extra is not None:
        state["extra"] = dict(extra)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file, turning every failure into a one-line :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; check the path (or train the run that writes it first)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # pickle/zip errors of every kind
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}); "
                        "the file is corrupt or not a checkpoint: delete it and rerun the step that writes it") from exc
    if not isinstance(state, dict):
        raise UserError(f"{path}: checkpoint holds a {type(state).__name__}, not a state dict; pass a file saved by this project")
    if "model" not in state:
        # A bare state_dict (e.g. torchvision weights) is accepted as the model weights.
        if all(isinstance(v, torch.Tensor) for v in state.values()):
            state = {"model": state}
        else:
            raise UserError(f"{path}: checkpoint has no 'model' entry; pass a file saved by this project")
    return state


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_model_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, Any], *,
                       strict: bool = True, name: str | None = None) -> None:
    """Load weights into ``model`` from a checkpoint path or a loaded checkpoint dict.

    A checkpoint of another architecture ends with a UserError that says what does not fit.
    """
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        state = load_checkpoint(source)
    else:
        state = dict(source)
        name = name or "checkpoint"
    weights = state["model"] if "model" in state else state
    weights = _strip_prefix(_strip_prefix(weights, "module."), "_orig_mod.")
    target = unwrap(model)
    own = target.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    mismatched = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    # BatchNorm's num_batches_tracked is absent from converted Caffe weights: harmless.
    missing_real = [k for k in missing if not k.endswith("num_batches_tracked")]
    if mismatched or (strict and (missing_real or unexpected)):
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatches (e.g. {k}: {tuple(weights[k].shape)} vs {tuple(own[k].shape)})")
        if missing_real:
            parts.append(f"{len(missing_real)} missing keys (e.g. {missing_real[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise UserError(f"{name}: checkpoint does not fit this model ({'; '.join(parts)}); "
                        "was it trained with the same --dataset/--backbone/number of classes?")
    target.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)


def save_training_state(path: Path, *, model: nn.Module, optimizer, scheduler, scaler, step: int,
                        best_metric: float, ema=None, is_main: bool = True) -> None:
    """A resume checkpoint of a training loop (model, optimizer, scheduler, scaler, step, every
    rank's RNG state, best metric, EMA). A collective under torchrun: every rank calls it, rank 0 writes."""
    from utils.runtime import rank_rng_states
    rng = rank_rng_states()
    if is_main:
        extra = {"ema": ema.state_dict()} if ema is not None else {}
        save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, step=step,
                        best_metric=best_metric, rng=rng, extra=extra)


def load_training_state(path: Path, *, model: nn.Module, optimizer, scheduler, scaler, ema=None,
                        device: torch.device | str = "cpu") -> tuple[int, float]:
    """Restore what :func:`save_training_state` wrote (this rank's RNG state included); returns
    ``(step, best_metric)``. A file that is no resume checkpoint, or does not fit the run, ends with
    a UserError that says to delete it."""
    from utils.runtime import set_rank_rng_state
    state = load_checkpoint(path, map_location=device)
    if "step" not in state or state.get("optimizer") is None:
        raise UserError(f"{path}: not a resume checkpoint; delete it to restart the run")
    try:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        if ema is not None and "ema" in state.get("extra", {}):
            ema.load_state_dict(state["extra"]["ema"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: resume checkpoint does not fit this run ({exc.__class__.__name__}); "
                        "delete it to restart the run") from exc
    if state.get("rng") is not None:
        set_rank_rng_state(state["rng"])
    return int(state["step"]), float(state.get("best_metric", -math.inf))
