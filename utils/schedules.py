"""The optimizer settings both tasks share (SGD momentum) and the per-iteration learning-rate
schedules: poly (segmentation, docs/method.md §7.1) and cosine (classification, §7.2)."""
from __future__ import annotations

import math

import torch

SGD_MOMENTUM = 0.9  # both tasks' SGD (docs/method.md §7.1, §7.2)


def poly_factor(step: int, total: int, power: float = 0.9) -> float:
    """(1 − i/L)^power, the original's LambdaLR factor at iteration i (0 from i = L on)."""
    return max(0.0, 1.0 - step / total) ** power


def cosine_factor(step: int, total: int) -> float:
    """½(1 + cos(π·i/T)): cosine annealing to 0 over T iterations."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def poly_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: poly_factor(i, total_steps, power))


def cosine_scheduler(optimizer: torch.optim.Optimizer, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: cosine_factor(i, total_steps))
