"""Where a run's outputs go, and the one decision of every program and both tasks whether its
work is already done — without importing torch, so that rerunning a finished step of an experiment
script costs a fraction of a second.

A training or test run named ``EXP`` (:class:`RunFiles`) writes into its output folder:

* ``EXP.pt`` (best snapshot), ``EXP--ema.pt`` (classification: the EMA weights, model only),
  ``EXP.resume.pt`` (while running), ``EXP_cfg.json`` (its flags), ``EXP.done.json`` (once finished),
  ``EXP_confusion.png`` (a classification test's confusion matrix);
* one line in ``<log>.txt`` (:func:`utils.run_log.finish_run`); TensorBoard scalars in ``tb/EXP``.

It is done when its ``EXP.done.json`` exists. A labelling pass (:class:`PassRecord`) is done when its
JSON record describes the same pass (its ``key``: labeller file identity, data, split, ratio, sizes,
precision) and its ``files`` are exactly the pass's output files now on disk, with the recorded sizes
and modification times: a missing, extra, truncated or rewritten file makes it incomplete, so the
"rerun the labelling step" advice of a bad file leads to a fresh pass.

:func:`skip_if_done` is what every program calls (:func:`utils.program.run_program`); the shell
libraries ask the same question through ``python -m utils.run_files done OUT_DIR EXP``.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from utils.cli import launch_rank
from utils.run_log import done_path, finished_run


def _suffixed(suffix: str) -> property:
    return property(lambda self: Path(self.out_dir) / f"{self.exp_name}{suffix}")


@dataclass(frozen=True)
class RunFiles:
    out_dir: Path
    exp_name: str
    log_name: str = "log"
    tb_root: Path | None = None

    snapshot = _suffixed(".pt")
    ema = _suffixed("--ema.pt")
    resume = _suffixed(".resume.pt")
    config = _suffixed("_cfg.json")
    confusion = _suffixed("_confusion.png")  # classification --state 2: the test's confusion matrix

    @property
    def log_file(self) -> Path:
        return Path(self.out_dir) / f"{self.log_name}.txt"

    @property
    def tb_dir(self) -> Path:
        """TensorBoard root (the run's scalars go to ``<tb_dir>/<exp_name>``)."""
        return Path(self.tb_root) if self.tb_root else Path(self.out_dir) / "tb"

    @property
    def done(self) -> Path:
        return done_path(self.out_dir, self.exp_name)

    def done_message(self, main: bool) -> str | None:
        """The "already finished" line when the run finished, else None. On the main process it
        also repairs a missing log line and removes a stale resume checkpoint."""
        if not main:
            return "" if self.done.is_file() else None
        if finished_run(self.out_dir, self.log_file, self.exp_name) is None:
            return None
        self.resume.unlink(missing_ok=True)
        return f"{self.exp_name}: already finished ({self.done}); skipping"


@dataclass(frozen=True)
class PassRecord:
    """A labelling pass: its JSON ``record``, the ``key`` that determines its files, and
    ``outputs()``, the manifest ``{name: [size, mtime_ns]}`` of its files now on disk."""
    record: Path
    key: dict
    outputs: Callable[[], dict]
    message: str  # the "already labelled" line

    def is_done(self) -> bool:
        try:
            record = json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(record, dict) or record.get("key") != self.key or not isinstance(record.get("files"), dict):
            return False
        try:
            return self.outputs() == record["files"]
        except OSError:
            return False

    def done_message(self, main: bool) -> str | None:
        return self.message if self.is_done() else None


def skip_if_done(done: RunFiles | PassRecord | None) -> bool:
    """True when the work is already done (rank 0 says so); None: never done (always rerun)."""
    if done is None:
        return False
    main = launch_rank() == 0
    message = done.done_message(main)
    if message is None:
        return False
    if main:
        print(message, flush=True)
    return True


def file_identity(path: str | os.PathLike) -> dict:
    """``{path (absolute), size, mtime_ns}`` of a file (size and time None when it is missing)."""
    path = Path(path)
    stat = path.stat() if path.is_file() else None
    return {"path": os.fspath(path.resolve()), "size": stat.st_size if stat else None,
            "mtime_ns": stat.st_mtime_ns if stat else None}


def file_manifest(folder: Path, suffix: str) -> dict[str, list[int]]:
    """``{id: [size, mtime_ns]}`` of every ``<id><suffix>`` below ``folder`` (ids hold their
    sub-folders, e.g. a Cityscapes ``<city>/``), sorted by id."""
    manifest = {}
    for root, _, names in os.walk(folder):
        rel = os.path.relpath(root, folder)
        for name in names:
            if name.endswith(suffix):
                st = os.stat(os.path.join(root, name))
                stem = name[:-len(suffix)]
                manifest[stem if rel == "." else f"{Path(rel).as_posix()}/{stem}"] = [st.st_size, st.st_mtime_ns]
    return dict(sorted(manifest.items()))


def single_file_manifest(path: Path) -> dict[str, list[int]]:
    """``{name: [size, mtime_ns]}`` of one file (``{}`` when it is missing)."""
    if not path.is_file():
        return {}
    st = path.stat()
    return {path.name: [st.st_size, st.st_mtime_ns]}


def main(argv: list[str] | None = None) -> int:
    """``python -m utils.run_files done OUT_DIR EXP``: exit 0 when run EXP of OUT_DIR finished, else 1
    (the shell libraries' question, answered by the same record the programs read)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "done":
        print("usage: python -m utils.run_files done OUT_DIR EXP", file=sys.stderr)
        return 2
    return 0 if done_path(argv[1], argv[2]).is_file() else 1


if __name__ == "__main__":
    sys.exit(main())
