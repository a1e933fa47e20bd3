"""Atomic file output and checked file input.

Nothing the project writes may be left half-written: every writer goes through
:func:`atomic_path`, which hands out a temporary name in the destination folder and renames it
over the destination only when writing succeeded (``os.replace`` is atomic on POSIX). A full disk
or an unwritable folder becomes a :class:`~utils.errors.UserError` naming the file;
:func:`require_writable_dir` checks an output folder before a program starts its work.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from utils.errors import ENVIRONMENT_ERRNOS, UserError, environment_error_message

TMP_MARKER = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any exception the temporary file is removed and ``path`` is left untouched. A full disk or
    an unwritable folder, whatever exception type the writer raises for it (``OSError`` with its
    errno; ``torch.save``: ``RuntimeError``), becomes a :class:`UserError` naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except UserError:
        _remove_quietly(tmp)
        raise
    except (OSError, RuntimeError) as exc:
        _remove_quietly(tmp)
        message = environment_error_message(exc, path)
        if message is None and isinstance(exc, OSError):
            message = f"{path}: cannot write ({exc.strerror or exc}); check the folder and free disk space, then rerun"
        if message is None:
            raise
        raise UserError(message) from exc
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        message = environment_error_message(exc, path)
        if message is None:
            raise
        raise UserError(message) from exc


def require_writable_dir(path: str | os.PathLike, flag: str) -> Path:
    """Create folder ``path`` if needed and prove it writable (a probe file, made and removed), so
    that an unwritable output folder ends the run before any work, with ``flag`` named."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{TMP_MARKER}write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{flag} {path}: exists but is not a folder (or lies under a file); "
                        "choose another folder") from None
    except OSError as exc:
        what = ENVIRONMENT_ERRNOS.get(exc.errno, (exc.strerror or str(exc), ""))[0]
        raise UserError(f"{flag} {path}: cannot write there ({what}); choose a writable folder "
                        "or fix its permissions, then rerun") from None
    return path


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
