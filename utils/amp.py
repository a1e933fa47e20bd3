"""Mixed precision with ``torch.amp`` in place of apex (SPEC §7.1: autocast + GradScaler).

``--mixed-precision`` keeps its original name. ``--amp-dtype`` picks bf16 (no scaler needed; the
default where the device supports it) or fp16 + GradScaler (the original's numerics, for GPUs
without bf16). On CPU, autocast runs in bf16. Without ``--mixed-precision`` everything is fp32.
"""
from __future__ import annotations

import contextlib

import torch

from utils.errors import UserError

MODES = ("fp32", "bf16", "fp16")


def choose_mode(mixed_precision: bool, amp_dtype: str, device: torch.device) -> str:
    """``fp32`` without mixed precision; else ``amp_dtype`` (``auto``: bf16 where supported, else fp16)."""
    if not mixed_precision:
        return "fp32"
    if amp_dtype == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16"
    if amp_dtype not in ("bf16", "fp16"):
        raise UserError(f"--amp-dtype {amp_dtype}: choose auto, bf16 or fp16")
    if amp_dtype == "fp16" and device.type == "cpu":
        raise UserError("--amp-dtype fp16: fp16 autocast needs a GPU; use bf16 on CPU")
    return amp_dtype


class Precision:
    """Autocast context + (for fp16) a GradScaler, behind one ``step(loss, optimizer)``."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in MODES:
            raise ValueError(f"precision mode must be one of {MODES}, got {mode!r}")
        self.mode, self.device = mode, device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        # Always a real GradScaler object so checkpoints have the same keys; disabled unless fp16.
        self.scaler = torch.amp.GradScaler(device.type, enabled=(mode == "fp16"))

    @property
    def enabled(self) -> bool:
        return self.mode != "fp32"

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """backward + optimizer step (skipped by the scaler on inf/NaN gradients in fp16)."""
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
