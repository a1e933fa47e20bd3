"""What ``main_fs`` and ``main_dmt`` share after parsing: skip what is already done, set up the
runtime (device, torchrun, seeds, precision), run one task, tear the process group down."""
from __future__ import annotations

import argparse

from classification import options

TASKS = ("baseline", "test", "dmt", "labeling")


def run_program(args: argparse.Namespace, task: str) -> None:
    """Run ``task`` (one of :data:`TASKS`) with the parsed flags."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if task != "labeling" and (args.named or task != "test") and options.run_files(args).skip_if_finished():
        return
    from utils import distributed
    from utils.cli import setup_runtime
    if task == "labeling":
        from classification.labeling import labeling_done, pseudo_path
        if labeling_done(args):
            print(f"{pseudo_path(args)}: already labelled by {args.continue_from} at ratio {args.label_ratio}; "
                  "skipping", flush=True)
            return
    rt = setup_runtime(args)
    try:
        if task == "labeling":
            from classification.labeling import run_labeling
            run_labeling(args, rt)
        elif task == "test":
            from classification.evaluation import run_test
            run_test(args, rt)
        else:
            from classification.training import run_training
            run_training(args, rt, dmt=task == "dmt")
    finally:
        distributed.cleanup()
