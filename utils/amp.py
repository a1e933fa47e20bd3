"""Mixed precision with ``torch.amp`` in place of apex (docs/method.md §7.1: autocast + loss scaling).

``--mixed-precision`` means what the original ran (apex O1 / ``torch.cuda.amp``): **fp16** autocast
with dynamic loss scaling (a GradScaler), on every device, CPU included. ``--amp-dtype bf16`` is the
opt-in alternative: faster and more robust on A100/H100-class GPUs (no scaler, no overflow), but its
numerics differ from the original's. Without ``--mixed-precision`` everything runs in fp32.

This module is set-up: :class:`Precision` holds the mode, the autocast arguments and the
GradScaler. The training steps enter ``torch.autocast(**precision.autocast_kwargs)`` themselves,
and :func:`utils.trainer.backward_step` runs backward + optimizer step through the scaler (with
fp16 it skips a step whose gradients hold inf/NaN, halves its scale and says so, so that a second
``optimizer.step()``, the online ablation's ``--online-double-step``, is skipped with it; the LR
scheduler still steps, as the original's did).
"""
from __future__ import annotations

import torch

from utils.errors import UserError

MODES = ("fp32", "bf16", "fp16")
AMP_DTYPES = ("fp16", "bf16")
DEFAULT_AMP_DTYPE = "fp16"


def fastest_dtype(device: torch.device) -> str:
    """The faster autocast dtype where the hardware runs it natively: bf16 on CPU and on GPUs with
    native bf16 (Ampere and later; emulation not counted), else fp16. Used by ``bench.segmentation``
    (``--amp-dtype auto``); the programs' ``--mixed-precision`` default is fp16 everywhere."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "bf16"


def choose_mode(mixed_precision: bool, amp_dtype: str, device: torch.device) -> str:
    """``fp32`` without mixed precision, else ``amp_dtype`` (fp16 by default, on every device;
    ``auto``: :func:`fastest_dtype`, for the benchmark)."""
    if not mixed_precision:
        return "fp32"
    if amp_dtype == "auto":
        return fastest_dtype(device)
    if amp_dtype not in AMP_DTYPES:
        raise UserError(f"--amp-dtype {amp_dtype}: choose fp16 (the original's numerics, the default) or bf16")
    return amp_dtype


class Precision:
    """The precision mode, its ``torch.autocast`` arguments and (for fp16) an enabled GradScaler."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in MODES:
            raise ValueError(f"precision mode must be one of {MODES}, got {mode!r}")
        self.mode, self.device = mode, device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        # Always a real GradScaler object so checkpoints have the same keys; disabled unless fp16.
        self.scaler = torch.amp.GradScaler(device.type, enabled=(mode == "fp16"))
        # ``torch.autocast(**autocast_kwargs)``: what the training steps enter (disabled in fp32)
        self.autocast_kwargs = {"device_type": device.type, "dtype": self.dtype, "enabled": mode != "fp32"}

    @property
    def enabled(self) -> bool:
        return self.mode != "fp32"

    def autocast(self) -> torch.autocast:
        """``torch.autocast(**autocast_kwargs)`` (disabled in fp32), for evaluation and labelling."""
        return torch.autocast(**self.autocast_kwargs)
