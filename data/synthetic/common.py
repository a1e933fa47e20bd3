"""What the three synthetic kinds share besides drawing: per-image random streams, the atomic
staging-folder build with its marker file, encoders, argument checks and the process pool."""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from utils.errors import UserError
from utils.io import TMP_MARKER, write_text_atomic

GENERATOR_VERSION = 1
KIND_CODES = {"voc": 1, "cityscapes": 2, "cifar10": 3}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "ids": 9, "order": 10}


def sample_rng(seed: int, kind: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, KIND_CODES[kind], SPLIT_CODES[split], index])


def write_bytes(path: Path, data: bytes) -> None:
    """Plain write inside the staging folder (the staging folder is the atomic unit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_bytes(data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{path}: no space left on device while writing; free disk space and rerun") from exc
        raise


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def write_lines(path: Path, lines: Sequence[str]) -> None:
    write_bytes(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))


def marker_path(root: str | os.PathLike, kind: str) -> Path:
    return Path(root) / f"synthetic-{kind}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def generate_atomically(root: str | os.PathLike, kind: str, args: dict, top_names: Sequence[str],
              build: Callable[[Path], None]) -> bool:
    """Build a dataset atomically; return False (doing nothing) if it is already complete."""
    root = Path(root)
    marker = marker_path(root, kind)
    record = json.loads(json.dumps({"kind": kind, "generator_version": GENERATOR_VERSION, "args": args}))
    if marker.is_file():
        try:
            existing = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{marker}: unreadable marker ({exc}); delete it and the dataset folders, then rerun") from exc
        if existing == record:
            return False
        raise UserError(f"{marker}: this root already holds a synthetic {kind} dataset made with "
                        f"{existing.get('args')}, not {record['args']}; use another --root or delete it")
    for name in top_names:
        if (root / name).exists():
            raise UserError(f"{root / name}: exists but is not a complete synthetic {kind} dataset "
                            f"(no {marker.name}); delete it or use another --root")
    root.mkdir(parents=True, exist_ok=True)
    prefix = f"{TMP_MARKER}synthetic-{kind}-"
    for stale in root.glob(prefix + "*"):
        pid = stale.name[len(prefix):]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = root / f"{prefix}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        build(staging)
        for name in top_names:
            os.replace(staging / name, root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_text_atomic(marker, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return True


def check_count(value: int, name: str, minimum: int = 1) -> None:
    if int(value) != value or value < minimum:
        raise UserError(f"{name}={value}: must be an integer >= {minimum}; pass a larger value")


def check_workers(workers: int) -> None:
    if int(workers) != workers or workers < 1:
        raise UserError(f"workers={workers}: must be an integer >= 1; pass --workers 1 or more")


def check_size(h: int, w: int, what: str) -> None:
    if h < 16 or w < 16:
        raise UserError(f"{what}={h}x{w}: images must be at least 16x16; pass a larger size")


def parallel_map(fn: Callable, jobs: Sequence, workers: int) -> Iterator:
    """``map(fn, jobs)`` in order, in ``workers`` processes when > 1 (same output either way)."""
    if workers <= 1 or len(jobs) < 64:
        yield from map(fn, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers))))
