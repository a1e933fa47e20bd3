"""DMT and curriculum labelling on CIFAR-10: labelling and phase training (docs/method.md §1.2, §2.2, §3.3, §9.2).

    python -m classification.main_dmt --labeling --train-set 400_seed1 --label-ratio 0.2 --continue-from P0--ema.pt
    python -m classification.main_dmt --train-set 400_seed1 --gamma1 4 --gamma2 4 --lr 0.1 --epochs 750 \\
        --batch-size-labeled 16 --batch-size-pseudo 496 --valtiny --fine-grain --seed 6 --exp-name RUN

``--labeling`` writes the pseudo pickle ``<pseudo-dir>/<train-set>_pseudo``
(:mod:`classification.labeling`; skipped when its record shows the same pass was done); otherwise
a freshly initialised network is trained on [pseudo; labelled] batches
(:mod:`classification.training`). γ1 = γ2 = 0 is curriculum labelling. Flags:
:mod:`classification.options`. A finished training run is skipped; an interrupted one resumes.
"""
from __future__ import annotations

import sys
from typing import Sequence

from classification.options import parse_dmt
from classification.run_config import TASKS, RunConfig, check_data
from utils.errors import run_cli
from utils.program import run_program


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_dmt(argv)
    run_program(RunConfig.from_args(args), TASKS, check_data)


if __name__ == "__main__":
    sys.exit(run_cli(main))
