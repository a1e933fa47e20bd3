"""What the two speed benchmarks (``python -m bench.classification`` and ``python -m bench.segmentation``)
share: the parser and the flags they both have, the range check of their counts, the device and the
defaults that depend on it, the fields every result starts with, the JSON file and the CUDA memory peak.
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from typing import Any, Iterable

import torch

from utils.cli import ArgumentParser
from utils.cost import device_name
from utils.errors import UserError
from utils.io import write_text_atomic
from utils.runtime import resolve_device

SEED = 0   # seeds the benchmarks' random inputs and weights (their speed does not depend on them)


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of ``doc`` (the benchmark's docstring)."""
    return ArgumentParser(prog=prog, description=" ".join(doc.split("\n\n")[0].split()))


def add_channels_last(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="ours' memory format (default: the project's: channels_last on CUDA, NCHW on CPU)")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")


def check_ranges(checks: Iterable[tuple[str, Any, bool]], rule: str) -> None:
    """``(flag, value, ok)`` triples: the first not ``ok`` ends the run with one line, ``rule`` saying
    what the values must be."""
    for flag, value, ok in checks:
        if not ok:
            raise UserError(f"{flag} {value}: out of range{rule}")


def resolve(args: argparse.Namespace, defaults: dict[str, tuple[Any, Any]]) -> torch.device:
    """The device of ``--device``; each flag named in ``defaults`` that was not given (None) is set to its
    default there, ``(on CUDA, on CPU)``."""
    device = resolve_device(args.device)
    for name, (on_cuda, on_cpu) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, on_cuda if device.type == "cuda" else on_cpu)
    return device


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def run_fields(device: torch.device) -> dict[str, Any]:
    """The fields every result starts with: date, device, its name and the torch version."""
    return {"date": time.strftime("%Y-%m-%d"), "device": str(device), "device_name": device_name(device),
            "torch": torch.__version__}


def write_json(path: str | None, out: dict[str, Any]) -> None:
    if path:
        write_text_atomic(path, json.dumps(out, indent=2) + "\n")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
