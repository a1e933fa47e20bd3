"""A CIFAR-10 run's configuration, computed once right after parsing (docs/method.md §1.2, §2.2, §9.2, §9.3).

:meth:`RunConfig.from_args` turns the flags of ``main_fs`` or ``main_dmt`` into everything derived
from them — the task, every data file the task reads, every output path, the validation set and
metric, the per-process batch sizes — and "done" (what makes the task already complete). It imports
no torch, so a finished step is skipped in a fraction of a second. The hyper-parameters stay in
``config.args`` (the parsed flags).

Files (docs/method.md §9.2): everything lives in ``<data-root>/cifar-10-batches-py/``: the baseline's
``--train-set`` file; DMT's ``<train-set>_labeled`` / ``_unlabeled``; the pseudo labels
``<pseudo-dir>/<train-set>_pseudo`` (``--pseudo-dir`` defaults to the CIFAR folder, as the original)
with its record ``<train-set>_pseudo.json``; validation ``test`` (``valtiny_seed1`` with ``--valtiny``).

Done: a training run, and a test run named with ``--exp-name``, when ``<out-dir>/<exp>.done.json``
exists (an unnamed test appends a line every time, as the original); a labelling pass when its
record describes the same pass (labeller and unlabelled file identities, ratio, precision) and the
pickle is the one it wrote (:class:`utils.run_files.PassRecord`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from utils.cli import launch_world_size
from utils.run_files import PassRecord, RunFiles, file_identity, single_file_manifest

# --- dataset facts: the CIFAR folder and the split file names (docs/method.md §9.2)
CIFAR_FOLDER = "cifar-10-batches-py"
TEST_SET = "test"
VALTINY_SET = "valtiny_seed1"
PSEUDO_SUFFIX = "_pseudo"
BACKBONES = ("wrn-28-2", "wrn-28-8")  # --backbone; the networks: classification/models.py:build_backbone

TASKS = {"baseline": "classification.training:run_training", "dmt": "classification.training:run_training",
         "test": "classification.evaluation:run_test", "labeling": "classification.labeling:run_labeling"}


def task_of(args: argparse.Namespace) -> str:
    """``main_fs``: baseline (``--state 1``) or test (``--state 2``); ``main_dmt``: dmt or labeling."""
    if hasattr(args, "state"):
        return "test" if args.state == 2 else "baseline"
    return "labeling" if args.labeling else "dmt"


@dataclass(frozen=True)
class RunConfig:
    args: argparse.Namespace       # the parsed flags (hyper-parameters)
    task: str                      # baseline | test | dmt | labeling
    folder: Path                   # <data-root>/cifar-10-batches-py
    train_file: Path               # baseline: --train-set; DMT: <train-set>_labeled
    unlabelled_file: Path          # <train-set>_unlabeled (DMT and labelling)
    pseudo_file: Path              # <pseudo-dir>/<train-set>_pseudo
    pseudo_record: Path            # <pseudo file>.json, the labelling pass's record
    val_set: str                   # test, or valtiny_seed1 with --valtiny
    metric: str                    # what picks snapshots and goes into log.txt: accuracy or fine_grained
    files: RunFiles
    eval_batch: int                # per process (--eval-batch-size split over the processes)
    label_batch: int               # per process (--batch-size-labeled split over the processes)
    inputs: tuple[tuple[Path, str], ...]    # (file, "labelled" | "pseudo") the task reads
    writable: tuple[tuple[Path, str], ...]  # (folder, flag) the task writes to
    done: RunFiles | PassRecord | None      # what makes the task already complete (None: always run)

    @property
    def val_file(self) -> Path:
        return self.folder / self.val_set

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunConfig:
        task = task_of(args)
        folder = Path(args.data_root) / CIFAR_FOLDER
        train_file = folder / (args.train_set if task in ("baseline", "test") else f"{args.train_set}_labeled")
        unlabelled = folder / f"{args.train_set}_unlabeled"
        pseudo_file = (Path(args.pseudo_dir) if getattr(args, "pseudo_dir", None) else folder) / \
            f"{args.train_set}{PSEUDO_SUFFIX}"
        pseudo_record = pseudo_file.with_name(pseudo_file.name + ".json")
        val_set = VALTINY_SET if args.valtiny else TEST_SET
        files = RunFiles(Path(args.out_dir), args.exp_name, args.log, Path(args.log_dir) if args.log_dir else None)
        world = launch_world_size()
        writable = [(Path(args.out_dir), "--out-dir")] + ([(Path(args.log_dir), "--log-dir")] if args.log_dir else [])
        inputs = {"labeling": [(unlabelled, "labelled")], "test": [(folder / val_set, "labelled")],
                  "baseline": [(train_file, "labelled"), (folder / val_set, "labelled")],
                  "dmt": [(train_file, "labelled"), (pseudo_file, "pseudo"), (folder / val_set, "labelled")]}[task]
        if task == "labeling":
            flag = "--pseudo-dir" if args.pseudo_dir else "--pseudo-dir (default: the CIFAR folder)"
            writable.append((pseudo_file.parent, flag))
            key = {"labeller": file_identity(args.continue_from), "unlabelled": file_identity(unlabelled),
                   "label_ratio": args.label_ratio, "mixed_precision": args.mixed_precision,
                   "amp_dtype": args.amp_dtype if args.mixed_precision else None}
            done = PassRecord(pseudo_record, key, lambda: single_file_manifest(pseudo_file),
                              f"{pseudo_file}: already labelled by {args.continue_from} at ratio {args.label_ratio}; "
                              "skipping")
        else:
            done = files if (args.named or task != "test") else None
        return cls(args=args, task=task, folder=folder, train_file=train_file, unlabelled_file=unlabelled,
                   pseudo_file=pseudo_file, pseudo_record=pseudo_record, val_set=val_set,
                   metric="fine_grained" if args.fine_grain else "accuracy", files=files,
                   eval_batch=max(1, args.eval_batch_size // world),
                   label_batch=max(1, getattr(args, "batch_size_labeled", 1) // world),
                   inputs=tuple(inputs), writable=tuple(writable), done=done)


def check_data(cfg: RunConfig) -> None:
    """The task's CIFAR pickles (present, ``data`` uint8 (N, 3072), N labels in range) before any
    work starts; for labelling also that ``--label-ratio`` suits the unlabelled set's size."""
    from classification.cifar import read_labelled, read_pseudo
    from classification.options import check_label_ratio

    for path, kind in cfg.inputs:
        arrays = read_pseudo(path) if kind == "pseudo" else read_labelled(path)
        if cfg.task == "labeling":
            check_label_ratio(cfg.args.label_ratio, len(arrays.data), path)
