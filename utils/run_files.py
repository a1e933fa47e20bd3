"""Where a run's outputs go, and skipping a run that already finished — without importing torch,
so that rerunning a finished step of an experiment script costs a fraction of a second.

A run named ``EXP`` writes into its output folder:

* ``EXP.pt`` (best snapshot), ``EXP--ema.pt`` (classification: the EMA weights, model only),
  ``EXP.resume.pt`` (while running), ``EXP_cfg.json`` (its flags), ``EXP.done.json`` (once finished);
* one line in ``<log>.txt`` (:func:`utils.run_log.finish_run`); TensorBoard scalars in ``tb/EXP``.

:func:`file_identity` describes an input file (path, size, modification time) for the records that
let a program recognise a step it has already done with the same inputs (e.g. a labelling pass).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from utils.run_log import done_path, finished_run


@dataclass(frozen=True)
class RunFiles:
    out_dir: Path
    exp_name: str
    log_name: str = "log"
    tb_root: Path | None = None

    def _file(self, suffix: str) -> Path:
        return Path(self.out_dir) / f"{self.exp_name}{suffix}"

    @property
    def log_file(self) -> Path:
        return Path(self.out_dir) / f"{self.log_name}.txt"

    @property
    def tb_dir(self) -> Path:
        """TensorBoard root (the run's scalars go to ``<tb_dir>/<exp_name>``)."""
        return Path(self.tb_root) if self.tb_root else Path(self.out_dir) / "tb"

    @property
    def snapshot(self) -> Path:
        return self._file(".pt")

    @property
    def ema(self) -> Path:
        return self._file("--ema.pt")

    @property
    def resume(self) -> Path:
        return self._file(".resume.pt")

    @property
    def config(self) -> Path:
        return self._file("_cfg.json")

    @property
    def done(self) -> Path:
        return done_path(self.out_dir, self.exp_name)

    def skip_if_finished(self) -> bool:
        """True (after saying so) when the run already finished; repairs a missing log line and
        removes a stale resume checkpoint. False when the run still has to be done."""
        if finished_run(self.out_dir, self.log_file, self.exp_name) is None:
            return False
        self.resume.unlink(missing_ok=True)
        print(f"{self.exp_name}: already finished ({self.done}); skipping", flush=True)
        return True


def file_identity(path: str | os.PathLike) -> dict:
    """``{path (absolute), size, mtime_ns}`` of a file (size and time None when it is missing)."""
    path = Path(path)
    stat = path.stat() if path.is_file() else None
    return {"path": os.fspath(path.resolve()), "size": stat.st_size if stat else None,
            "mtime_ns": stat.st_mtime_ns if stat else None}
