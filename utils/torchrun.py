"""torchrun for the experiment scripts (``utils/launch.sh`` ``run_py``), without its failure report.

    python -m utils.torchrun [TORCHRUN OPTIONS] -- MODULE [PROGRAM ARGS]

Everything before ``--`` is torchrun's (``--standalone --nproc_per_node=4`` ...); ``MODULE`` runs as
``python -m MODULE`` in every process with the program's arguments handed over as they are, so
that a program flag is never parsed as an abbreviated torchrun option (``--n 1`` is not
``--nnodes``). When a process fails, the exit status is the first failed process's (2 for the
project's one-line errors) and torchrun's ``ChildFailedError`` traceback and log block are not
printed; an error line that several processes print identically is shown once. A process that
crashed with a traceback still shows its own traceback.
"""
from __future__ import annotations

import logging
import os
import sys
import threading

ERROR_PREFIX = b"error: "


def _dedup_errors(read_fd: int, write_fd: int) -> None:
    """Copy ``read_fd`` to ``write_fd`` as it comes (progress bars included), dropping a repeated
    ``error: ...`` line."""
    seen: set[bytes] = set()
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        out = []
        *lines, pending = pending.split(b"\n")
        for line in lines:
            head, cr, last = line.rpartition(b"\r")  # what a terminal shows: the text after the last \r
            if last.startswith(ERROR_PREFIX):
                if last in seen:
                    out.append(head + cr)
                    continue
                seen.add(last)
            out.append(line + b"\n")
        # a partial line is passed on now (tqdm's \r updates), except a tail that may become an error line
        head, cr, last = pending.rpartition(b"\r")
        if last.startswith(ERROR_PREFIX) or ERROR_PREFIX.startswith(last):
            out.append(head + cr)
            pending = last
        else:
            out.append(pending)
            pending = b""
        if out:
            os.write(write_fd, b"".join(out))
    if pending:
        os.write(write_fd, pending)


def split_argv(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """(torchrun options, module, program arguments) of ``OPTIONS -- MODULE ARGS``."""
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        raise SystemExit("usage: python -m utils.torchrun [TORCHRUN OPTIONS] -- MODULE [ARGS]")
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1], argv[cut + 2:]


def main(argv: list[str] | None = None) -> int:
    launcher, module, program = split_argv(list(sys.argv[1:] if argv is None else argv))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args([*launcher, "--module", module])
    args.training_script_args = program  # handed over untouched, never parsed by torchrun
    if sys.stderr.isatty():
        os.environ["DMT_TTY"] = "1"  # the processes' stderr is a pipe now; progress bars stay lively
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    sys.stderr.flush()
    real_stderr = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)  # the processes inherit this stderr
    os.close(write_fd)
    copier = threading.Thread(target=_dedup_errors, args=(read_fd, real_stderr), daemon=True)
    copier.start()
    status = 0
    try:
        run(args)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        status = failure.exitcode if failure.exitcode > 0 else 1
    except KeyboardInterrupt:
        status = 130
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes the pipe's last write end here: the copier sees EOF
        copier.join(timeout=10)
    return status


if __name__ == "__main__":
    sys.exit(main())
