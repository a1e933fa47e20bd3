"""What ``main_fs`` and ``main_dmt`` share after parsing: skip what is already done, check the
output folders and the data files, set up the runtime (device, torchrun, seeds, precision), run one
task, tear the process group down."""
from __future__ import annotations

import argparse
from pathlib import Path

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
    check_output_folders(args, task)
    if not args.no_check_data:
        check_data(args, task)
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


def check_output_folders(args: argparse.Namespace, task: str) -> None:
    """Every folder the task writes to must be writable, checked before any work starts."""
    from utils.io import require_writable_dir

    require_writable_dir(args.out_dir, "--out-dir")
    if args.log_dir:
        require_writable_dir(args.log_dir, "--log-dir")
    if task == "labeling":
        from classification.labeling import pseudo_path
        flag = "--pseudo-dir" if args.pseudo_dir else "--pseudo-dir (default: the CIFAR folder)"
        require_writable_dir(pseudo_path(args).parent, flag)


def data_files(args: argparse.Namespace, task: str) -> list[tuple[Path, str]]:
    """(file, kind) of every CIFAR pickle the task reads; kind is ``labelled`` or ``pseudo``."""
    from classification.cifar import cifar_folder

    folder = cifar_folder(args.data_root)
    val = folder / options.val_set_name(args)
    if task == "labeling":
        return [(folder / f"{args.train_set}_unlabeled", "labelled")]
    if task == "test":
        return [(val, "labelled")]
    if task == "baseline":
        return [(folder / args.train_set, "labelled"), (val, "labelled")]
    from classification.labeling import pseudo_path
    return [(folder / f"{args.train_set}_labeled", "labelled"), (pseudo_path(args), "pseudo"), (val, "labelled")]


def check_data(args: argparse.Namespace, task: str) -> None:
    """The task's CIFAR pickles (present, ``data`` uint8 (N, 3072), N labels in range) before any
    work starts; for labelling also that ``--label-ratio`` suits the unlabelled set's size."""
    from classification.cifar import read_labelled, read_pseudo

    for path, kind in data_files(args, task):
        arrays = read_pseudo(path) if kind == "pseudo" else read_labelled(path)
        if task == "labeling":
            options.check_label_ratio(args.label_ratio, len(arrays.data), path)
