"""One error type for bad input, and the CLI wrapper that turns it into one clear line.

Every check on user input (missing dataset folder, missing split file, unreadable image, label out
of range, wrong checkpoint, full disk ...) raises :class:`UserError` with a message of the form
``"<file>: <what is wrong>; <what to do>"``. Entry points wrap ``main`` in :func:`run_cli`, which
prints ``error: <message>`` on stderr and exits with status 2 instead of a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence


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


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; return 0 on success, 2 on :class:`UserError`, 130 on Ctrl-C."""
    try:
        main(argv)
    except UserError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    return 0
