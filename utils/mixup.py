"""Mixup (docs/method.md §3.3): λ ~ Beta(α, α) from numpy, optionally λ ← max(λ, 1 − λ); one permutation of
the whole batch mixes inputs and (for DMT) the per-sample weights alike."""
from __future__ import annotations

import numpy as np
import torch


def sample_lambda(alpha: float, max_lambda: bool) -> float:
    """λ ~ Beta(α, α) with numpy's global RNG (as the original); ``max_lambda`` → max(λ, 1 − λ)."""
    lam = float(np.random.beta(alpha, alpha))
    return max(lam, 1.0 - lam) if max_lambda else lam


def mix(x: torch.Tensor, lam: float, permutation: torch.Tensor) -> torch.Tensor:
    """λ·x + (1 − λ)·x[π] (also used for the weights w̃)."""
    return lam * x + (1.0 - lam) * x[permutation]


def random_permutation(n: int, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, device=device)
