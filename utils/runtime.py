"""Seeding, device choice, backend switches and the RNG state that resume checkpoints carry."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from utils.errors import UserError


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and CUDA), as the original did."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"--device {name}: unknown device; use auto, cpu or cuda")
    return torch.device(name)


def configure_backends(device: torch.device, deterministic: bool = False) -> None:
    """Backend switches for speed, or for bit-reproducible runs with ``deterministic``.

    * CUDA: cuDNN autotuning (the original ran cuDNN non-deterministic) and **TF32** for fp32
      convolutions and matmuls (used on Ampere and later GPUs; 10-bit mantissa inputs, fp32
      accumulation). ``deterministic`` turns both off, selects deterministic cuDNN algorithms and
      sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (unless already set), which deterministic cuBLAS
      needs; it must be in place before the first cuBLAS call (:func:`utils.cli.setup_runtime`
      sets it before the device is touched).
    * Any device: ``deterministic`` calls ``torch.use_deterministic_algorithms(True, warn_only=True)``.
    CPU numerics are not changed by any of this.
    """
    if device.type == "cuda":
        if deterministic:
            import os
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def rng_state() -> dict[str, Any]:
    """Every RNG a training loop draws from (Python, numpy, torch CPU and CUDA)."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def rank_rng_states() -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, in rank order (a collective under torchrun; ``[state]`` in a
    single process). Each rank draws from its own RNGs (seeded ``seed + rank``), so a resume
    checkpoint carries all of them."""
    from utils import distributed
    return distributed.all_gather_object(rng_state())


def set_rank_rng_state(saved: Any) -> None:
    """Restore this rank's RNG state from a resume checkpoint's: the list of :func:`rank_rng_states`
    (rank r restores entry r; a rank beyond the saved list, after a resume with more processes,
    keeps its fresh seeding), or one state (a checkpoint of a single process or an older run)."""
    from utils import distributed
    if isinstance(saved, dict):
        set_rng_state(saved)
        return
    rank = distributed.info().rank
    if rank < len(saved):
        set_rng_state(saved[rank])
