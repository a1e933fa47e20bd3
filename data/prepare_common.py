"""Pieces shared by the dataset preparation tools (``data/prepare_*.py``, docs/method.md §5.1): the count
check and its flags, the ``--workers`` flag, and id lists shortened for one-line error messages."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

from data.synthetic import parallel_map
from utils.errors import UserError


def examples(ids: Sequence[str], k: int = 5) -> str:
    """``"2 ids (a, b)"`` / ``"12 ids (e.g. a, b, c, d, e)"`` for messages."""
    shown = ", ".join(list(ids)[:k])
    noun = "id" if len(ids) == 1 else "ids"
    return f"{len(ids):,} {noun} ({'' if len(ids) <= k else 'e.g. '}{shown})"


def add_count_flags(parser: argparse.ArgumentParser, names: Sequence[str], defaults: Sequence[int]) -> None:
    """``--expect-counts N1 N2`` (default: the real dataset's sizes) or ``--no-check-counts``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--expect-counts", type=int, nargs=len(names), metavar=tuple(n.upper() for n in names),
                       default=tuple(defaults),
                       help=f"required sizes of {', '.join(names)} (default {' '.join(map(str, defaults))})")
    group.add_argument("--no-check-counts", action="store_true",
                       help="accept any sizes (custom or synthetic datasets)")


def check_counts(args: argparse.Namespace, counts: dict[str, int], where: Path, details: str = "") -> None:
    """UserError naming ``where`` unless ``counts`` (name -> size) equal ``--expect-counts``."""
    if args.no_check_counts:
        return
    expected = dict(zip(counts, args.expect_counts))
    if counts != expected:
        found = ", ".join(f"{name} {n:,}" for name, n in counts.items())
        wanted = ", ".join(f"{name} {n:,}" for name, n in expected.items())
        raise UserError(f"{where}: found {found}, expected {wanted}{f' ({details})' if details else ''}; "
                        f"check the files, or pass --expect-counts / --no-check-counts for a custom set")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def add_workers_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="process files in this many processes (same result); default 1")


def run_jobs(fn: Callable, jobs: Sequence, workers: int) -> Iterator:
    """``map(fn, jobs)`` in order, in up to ``workers`` processes (one per CPU at most)."""
    return parallel_map(fn, jobs, min(workers, os.cpu_count() or 1))
