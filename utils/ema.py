"""An exponential moving average of a model's weights (classification, docs/method.md §7.2).

``shadow ← decay·shadow + (1 − decay)·θ`` after every step; buffers (BN statistics) are copied.
The original inverted the update (shadow ← 0.001·shadow + 0.999·θ for its "decay 0.999", docs/method.md
§11.3), which makes its "EMA" the last iterate in effect; ``ModelEMA(model, decay=0.001)`` reproduces
that, and the classification scripts say which they use.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from utils.checkpoint import unwrap


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(unwrap(model)).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        source = unwrap(model)
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in source.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        torch._foreach_copy_(list(self.module.buffers()), list(source.buffers()))  # one multi-tensor copy

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
