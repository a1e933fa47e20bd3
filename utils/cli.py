"""Command-line flags every entry point shares, and turning them into a runtime set-up.

Importing this module (and building a parser with :func:`add_runtime_args`) does not import torch,
so a program can parse its flags and skip a finished run in a fraction of a second; torch is
imported by :func:`setup_runtime`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: importing torch costs seconds
    import torch

    from utils import distributed
    from utils.amp import Precision


def add_runtime_args(p: argparse.ArgumentParser, default_workers: int = 4, default_seed: int = 1) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--seed", type=int, default=default_seed, help="seeds torch, random and numpy")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    g.add_argument("--workers", type=int, default=default_workers, help="new: DataLoader worker processes")
    g.add_argument("--mixed-precision", action="store_true",
                   help="autocast (torch.amp) training/labelling, in place of the original's apex O1")
    g.add_argument("--amp-dtype", choices=["auto", "bf16", "fp16"], default="auto",
                   help="new: autocast dtype with --mixed-precision (auto: bf16 where supported, else fp16 + GradScaler)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="new: channels_last memory format (default: on with CUDA, where tensor cores run NHWC; "
                        "off on CPU, where it gave no reliable gain); --no-channels-last keeps NCHW on GPUs")
    g.add_argument("--compile", action="store_true", help="new: torch.compile the model")
    g.add_argument("--deterministic", action="store_true",
                   help="new: deterministic algorithms (bit-reproducible runs; slower on GPU)")


@dataclass
class Runtime:
    device: torch.device
    dist: distributed.DistInfo
    precision: Precision
    memory_format: torch.memory_format


def setup_runtime(args: argparse.Namespace) -> Runtime:
    """Device, torchrun process group, seeds, backend switches and precision from the shared flags.

    Under torchrun every rank is seeded with ``seed + rank`` so that random augmentations differ
    across ranks while the model initialisation (seeded before wrapping, then broadcast by DDP) agrees.
    """
    from utils import distributed
    from utils.amp import Precision, choose_mode
    from utils.runtime import configure_backends, resolve_device, seed_everything

    device, info = distributed.setup(resolve_device(args.device))
    seed_everything(args.seed + info.rank)
    configure_backends(device, deterministic=getattr(args, "deterministic", False))
    precision = Precision(choose_mode(args.mixed_precision, args.amp_dtype, device), device)
    return Runtime(device, info, precision, memory_format_for(device, getattr(args, "channels_last", None)))


def memory_format_for(device: torch.device, channels_last: bool | None = None) -> torch.memory_format:
    """``--channels-last`` / ``--no-channels-last``, or when neither is given (None): channels_last on
    CUDA (tensor-core convolutions run NHWC natively), NCHW on CPU (no reliable gain measured there,
    ``python -m bench.segmentation --device cpu``). Only the memory layout changes, not the numerics
    beyond float rounding (tests/test_fast_step_equivalence.py)."""
    import torch

    use = device.type == "cuda" if channels_last is None else channels_last
    return torch.channels_last if use else torch.contiguous_format


def data_loader_kwargs(workers: int, device: torch.device) -> dict:
    """pin_memory on GPU, persistent workers and prefetching when there are workers."""
    kwargs: dict = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4)
    return kwargs
