"""Command-line flags every entry point shares, and turning them into a runtime set-up.

Importing this module (and building a parser with :func:`add_runtime_args`) does not import torch,
so a program can parse its flags and skip a finished run in a fraction of a second; torch is
imported by :func:`setup_runtime`.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: importing torch costs seconds
    import torch

    from utils import distributed
    from utils.amp import Precision


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as one line, as every other bad input here: ``error: MESSAGE; see
    PROG --help`` on stderr, exit 2 (argparse's own prints the whole usage first)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def add_runtime_args(p: argparse.ArgumentParser, default_workers: int = 4, default_seed: int = 1) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--seed", type=int, default=default_seed, help="seeds torch, random and numpy")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    g.add_argument("--workers", type=int, default=default_workers, help="new: DataLoader worker processes")
    g.add_argument("--mixed-precision", action="store_true",
                   help="fp16 autocast + GradScaler (torch.amp) for training and labelling, the original's "
                        "apex O1 numerics, on any device (on CPUs half precision is often emulated and slow)")
    g.add_argument("--amp-dtype", choices=["fp16", "bf16"], default="fp16",
                   help="new: autocast dtype with --mixed-precision: fp16 + GradScaler (default, the original's); "
                        "bf16 (no scaler) is faster and more robust on A100/H100-class GPUs, but its numerics differ")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="new: channels_last memory format (default: on with CUDA, where tensor cores run NHWC; "
                        "off on CPU, where it gave no reliable gain); --no-channels-last keeps NCHW on GPUs")
    g.add_argument("--compile", action="store_true", help="new: torch.compile the model")
    g.add_argument("--no-check-data", action="store_true",
                   help="new: skip the check of every listed data file (from its header) before the work starts")
    g.add_argument("--deterministic", action="store_true",
                   help="new: deterministic algorithms (bit-reproducible runs; slower on GPU): cuDNN "
                        "autotuning and TF32 off, CUBLAS_WORKSPACE_CONFIG=:4096:8 set on CUDA")


def add_label_quality_args(p: argparse.ArgumentParser, phase_source: str) -> None:
    """The flags of the pseudo-label quality diagnostics (:mod:`utils.label_quality`), both tasks."""
    p.add_argument("--no-gt-diagnostics", action="store_true",
                   help="new: labelling does not compare its pseudo labels with the true labels of the unlabelled "
                        "data (default on; off by itself when they are missing)")
    p.add_argument("--label-phase", type=int, default=None,
                   help=f"new: phase number of a labelling pass for TensorBoard (default: from {phase_source})")


def launch_rank() -> int:
    """This process's torchrun rank, read before any process group exists (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def launch_world_size() -> int:
    """The number of torchrun processes, read before any process group exists (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


CUBLAS_WORKSPACE = ":4096:8"  # what deterministic cuBLAS needs (CUDA docs, "Reproducibility")


def check_number(flag: str, value: float | None, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, hint: str = "") -> None:
    """A finite ``value`` in the interval, else a one-line UserError naming ``flag`` (None = unset, fine).

    ``low_open``/``high_open`` exclude the bound (e.g. ``--lr`` must be > 0)."""
    from utils.errors import UserError

    if value is None:
        return
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        if low is not None and high is not None:
            need = f"must lie in {lo}, {hi}"
        elif low is not None:
            need = f"must be {'>' if low_open else '>='} {low:g}"
        else:
            need = f"must be {'<' if high_open else '<='} {high:g}"
        raise UserError(f"{flag} {value}: {need}" + (f" ({hint})" if hint else "") + "; pass a valid value")


def check_runtime_args(args: argparse.Namespace) -> None:
    """The shared runtime flags' values (before anything is loaded)."""
    check_number("--workers", getattr(args, "workers", 0), low=0)


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

    if getattr(args, "deterministic", False):
        # cuBLAS reads it when its first handle is created: set before any CUDA work.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
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
