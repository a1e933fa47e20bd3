"""Atomic file output and checked file input.

Nothing the project writes may be left half-written: every writer goes through
:func:`atomic_path`, which hands out a temporary name in the destination folder and renames it
over the destination only when writing succeeded (``os.replace`` is atomic on POSIX). A full disk
becomes a :class:`~utils.errors.UserError` naming the file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import pickle
from pathlib import Path
from typing import Iterator

import numpy as np

from utils.errors import UserError

TMP_MARKER = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{path}: no space left on device while writing; free disk space and rerun") from exc
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_pickle_atomic(path: str | os.PathLike, obj: object) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line (a single ``write`` of a complete line, then fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"{path}: no space left on device while appending; free disk space and rerun") from exc
        raise


def require_dir(path: str | os.PathLike, what: str, hint: str) -> Path:
    """Return ``Path(path)`` if it is a directory, else raise a UserError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: {what} folder not found; {hint}")
    return path


def require_file(path: str | os.PathLike, what: str, hint: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; {hint}")
    return path


def read_id_list(path: str | os.PathLike, hint: str = "generate the split files first") -> list[str]:
    """Read a split/list file: one id per line, blank lines skipped."""
    path = require_file(path, "split file", hint)
    with open(path, encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise UserError(f"{path}: split file is empty; regenerate it")
    return ids
