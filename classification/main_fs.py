"""Supervised WRN-28-2 baseline on CIFAR-10 with mixup, and testing a checkpoint (docs/method.md §1.2, §9.3).

    python -m classification.main_fs --state 1 --train-set 400_seed1_labeled --ra --n 1 --m 10 --alpha 0.75 ...
    python -m classification.main_fs --state 2 --continue-from RUN--ema.pt [--valtiny] [--fine-grain]

``--state 1`` trains (:mod:`classification.training`); ``--state 2`` tests ``--continue-from`` on
the test set (valtiny with ``--valtiny``) and appends the result to ``<out-dir>/<log>.txt``
(:mod:`classification.evaluation`). Flags: :mod:`classification.options`. A run whose
``<out-dir>/<exp>.done.json`` exists is skipped; an interrupted training run resumes.
"""
from __future__ import annotations

import sys
from typing import Sequence

from classification.options import parse_fs
from classification.run_config import TASKS, RunConfig, check_data
from utils.errors import run_cli
from utils.program import run_program


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_fs(argv)
    run_program(RunConfig.from_args(args), TASKS, check_data)


if __name__ == "__main__":
    sys.exit(run_cli(main))
