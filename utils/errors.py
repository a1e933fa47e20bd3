"""One error type for bad input, and the CLI wrapper that turns it into one clear line.

Every check on user input (missing dataset folder, missing split file, unreadable image, label out
of range, wrong checkpoint, full disk ...) raises :class:`UserError` with a message of the form
``"<file>: <what is wrong>; <what to do>"``. Entry points wrap ``main`` in :func:`run_cli`, which
prints ``error: <message>`` on stderr and exits with status 2 instead of a traceback. A full disk
or an unwritable folder met by any writer (``OSError`` ENOSPC/EDQUOT/EROFS/EACCES/..., or the
``RuntimeError`` of a failed ``torch.save``) ends the same way (:func:`environment_error_message`).
"""
from __future__ import annotations

import errno
import sys
from typing import Callable, Sequence

# errno -> (what happened, what to do) for the OS errors a full or unwritable machine raises
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: ("no space left on device", "free disk space and rerun (a training run resumes from its last checkpoint)"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota and rerun"),
    errno.EFBIG: ("file too large for this file system", "write to another file system"),
    errno.EROFS: ("read-only file system", "choose a writable folder (e.g. --out-dir) and rerun"),
    errno.EACCES: ("permission denied", "choose a folder you may write to (e.g. --out-dir) or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you may write to (e.g. --out-dir) or fix its permissions"),
}
# torch.save reports a failed write as a RuntimeError from its zip writer, not as an OSError
TORCH_WRITE_FAILURE_MARKERS = ("PytorchStreamWriter", "file write failed", "unexpected pos")


class UserError(Exception):
    """A problem with the user's input or environment that the user can fix."""


def user_message(exc: UserError) -> str:
    """The one-line message of ``exc``. A UserError raised in a DataLoader worker comes back from
    PyTorch as "Caught UserError in DataLoader worker process N. Original Traceback (...) ...
    UserError: <message>": that is unwrapped to the original <message>, whatever the worker count."""
    text = str(exc)
    if "in DataLoader worker process" in text and "Original Traceback" in text:
        return text.rstrip().splitlines()[-1].split("UserError: ", 1)[-1]
    return text


def environment_error_message(exc: BaseException, path: object = None) -> str | None:
    """The one-line message for a full disk or an unwritable file/folder, or None for other errors.

    ``OSError`` with one of :data:`ENVIRONMENT_ERRNOS`, and the ``RuntimeError`` ``torch.save``
    raises when its writes fail (it carries no errno). ``path`` names the file when the exception
    does not (``exc.filename``)."""
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        what, todo = ENVIRONMENT_ERRNOS[exc.errno]
        where = path if path is not None else (exc.filename or "a file")
        return f"{where}: {what} while writing or creating it; {todo}"
    if isinstance(exc, RuntimeError) and any(m in str(exc) for m in TORCH_WRITE_FAILURE_MARKERS):
        where = path if path is not None else "a checkpoint"
        return (f"{where}: writing failed ({' '.join(str(exc).split())[-120:]}); the disk is probably full: "
                "free disk space and rerun (a training run resumes from its last checkpoint)")
    return None


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; return 0 on success, 2 on :class:`UserError` (and on a full disk or an
    unwritable folder that no writer turned into one), 130 on Ctrl-C."""
    try:
        main(argv)
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr, flush=True)
        return 2
    except (OSError, RuntimeError) as exc:
        message = environment_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    return 0
