"""A segmentation run's configuration, computed once right after parsing (docs/method.md §1.1, §5, §6.1, §8, §9.1).

:meth:`RunConfig.from_args` turns the flags into everything derived from them — the task, the
dataset facts (class count, input convention, crop and test sizes, data root), the split-list names,
every output path, the evaluation protocol and the per-process batch sizes — and "done" (what makes
the task already complete). It imports no torch, so a finished step is skipped in a fraction of a
second. The hyper-parameters themselves stay in ``config.args`` (the parsed flags).

Split lists (docs/method.md §9.1): labelled ``{train-set}_labeled_{sets-id}``; unlabelled (the pseudo set,
always the *whole* list) ``{train-set without -l/-r}_unlabeled_{sets-id}``; validation ``val``
(``valtiny`` with ``--valtiny``). VOC lists live in ``ImageSets/Segmentation/``, Cityscapes lists
in ``data_lists/`` (training lists index ``leftImg8bit/train``, validation lists ``leftImg8bit/val``).

Outputs: a training or test run writes :class:`utils.run_files.RunFiles` (``<out-dir>/<exp>.pt``,
``.resume.pt``, ``_cfg.json``, ``.done.json``, ``log.txt``, ``tb/<exp>``) and is done when its done
record exists. A labelling pass writes ``<pseudo-dir>`` (default ``<out-dir>/pseudo/<exp-name>``): it
fills ``<pseudo-dir>.partial`` and renames it into place once every file is written, and it is done
when ``<pseudo-dir>/labeling.json`` describes the same pass and lists exactly the folder's ``.npy``
files (:class:`utils.run_files.PassRecord`).
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

from utils.cli import launch_world_size
from utils.run_files import PassRecord, RunFiles, file_identity, file_manifest

# --- dataset facts (docs/method.md §5.1, §6.1)
VOC_NUM_CLASSES = 21
CITY_NUM_CLASSES = 19
VOC_CROP_SIZE = (321, 321)
VOC_TEST_SIZE = (505, 505)   # VOC test images are padded to this size
CITY_CROP_SIZE = (256, 512)
CITY_SIZE = (512, 1024)      # Cityscapes images are resized to this size (training and test)
DEFAULT_DATA_ROOTS = {"voc": "datasets/VOCdevkit/VOC2012", "city": "datasets/cityscapes"}
MODEL_SPLIT_SUFFIXES = ("-l", "-r")  # DMS subsets (docs/method.md §1.3) share the unlabelled list of their split

LABELING_RECORD = "labeling.json"
PARTIAL_SUFFIX = ".partial"

TASKS = {"supervised": "segmentation.training:run_training", "dmt": "segmentation.training:run_training",
         "labeling": "segmentation.labeling:run_labeling", "test": "segmentation.evaluation:run_test"}


@dataclass(frozen=True)
class Protocol:
    """A test protocol (docs/method.md §8): ``whole`` image, ``sliding`` windows, or ``msf`` (multi-scale + flip)."""
    name: str = "whole"
    window: tuple[int, int] | None = None   # sliding: window (h, w)
    stride: tuple[int, int] | None = None   # sliding: stride (h, w)
    scales: tuple[float, ...] = (1.0,)      # msf
    flip: bool = True                       # msf

    def describe(self) -> str:
        if self.name == "sliding":
            return f"sliding({self.window[0]}x{self.window[1]}/{self.stride[0]}x{self.stride[1]})"
        if self.name == "msf":
            return f"msf({'/'.join(f'{s:g}' for s in self.scales)}{'+flip' if self.flip else ''})"
        return self.name


def default_stride(window) -> tuple[int, ...]:
    """The sliding window's default stride: ⌈2/3⌉ of the window."""
    return tuple(max(1, math.ceil(2 * n / 3)) for n in window)


def default_test_size(dataset: str) -> tuple[int, int]:
    """The labeller's / tester's map size: VOC 505×505 (padded to), City 512×1024 (resized to)."""
    return VOC_TEST_SIZE if dataset == "voc" else CITY_SIZE


def unlabelled_list_name(train_set: str, sets_id: int) -> str:
    """``{train-set}_unlabeled_{sets-id}`` with a DMS ``-l``/``-r`` suffix stripped (docs/method.md §9.1)."""
    for suffix in MODEL_SPLIT_SUFFIXES:
        if train_set.endswith(suffix):
            train_set = train_set[: -len(suffix)]
    return f"{train_set}_unlabeled_{sets_id}"


def task_of(args: argparse.Namespace) -> str:
    if args.labeling:
        return "labeling"
    return {1: "dmt", 2: "supervised", 3: "test"}[args.state]


@dataclass(frozen=True)
class RunConfig:
    args: argparse.Namespace           # the parsed flags (hyper-parameters)
    task: str                          # supervised | dmt | labeling | test
    num_classes: int
    input_norm: str                    # coco (Caffe: BGR, 0–255, mean subtraction) with --coco, else imagenet
    crop_size: tuple[int, int]         # training crop
    test_size: tuple[int, int]         # VOC: padded to; City: resized to (training images too)
    data_root: Path
    image_format: str                  # what the listed images must be: JPEG (VOC) or PNG (Cityscapes)
    labelled_list: str
    unlabelled_list: str
    val_list: str
    files: RunFiles
    pseudo_dir: Path                   # the pass's folder: written by labelling, read by DMT training
    labeling_record: Path              # <pseudo-dir>/labeling.json
    protocol: Protocol                 # --eval-protocol, for validation and testing
    val_batch: int                     # per process (docs/method.md §8: the training batch's size)
    label_batch: int                   # per process (--batch-size-labeled split over the processes)
    done: RunFiles | PassRecord        # what makes this task already complete
    writable: tuple[tuple[Path, str], ...]  # (folder, flag) the task writes to

    @property
    def online(self) -> bool:
        """The online ablation (docs/method.md §3.2): DMT training without a pseudo folder."""
        return self.task == "dmt" and self.args.loss == "online"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunConfig:
        task = task_of(args)
        voc = args.dataset == "voc"
        crop = tuple(args.crop_size) if args.crop_size else (VOC_CROP_SIZE if voc else CITY_CROP_SIZE)
        test_size = tuple(args.test_size) if args.test_size else default_test_size(args.dataset)
        window = tuple(args.eval_crop) if args.eval_crop else crop
        stride = tuple(args.eval_stride) if args.eval_stride else default_stride(window)
        files = RunFiles(Path(args.out_dir), args.exp_name, tb_root=Path(args.log_dir) if args.log_dir else None)
        pseudo_dir = Path(args.pseudo_dir) if args.pseudo_dir else Path(args.out_dir) / "pseudo" / args.exp_name
        world = launch_world_size()
        writable = [(Path(args.out_dir), "--out-dir")] + ([(Path(args.log_dir), "--log-dir")] if args.log_dir else [])
        if task == "labeling":  # the pass writes <pseudo-dir>.partial beside the folder, then renames it
            writable.append((pseudo_dir.parent, "--pseudo-dir (its parent folder)"))
            done = PassRecord(pseudo_dir / LABELING_RECORD, labeling_key(args),
                              lambda: file_manifest(pseudo_dir, ".npy"),
                              f"{args.exp_name}: already labelled ({pseudo_dir} is complete); skipping")
        else:
            done = files
        return cls(
            args=args, task=task, num_classes=VOC_NUM_CLASSES if voc else CITY_NUM_CLASSES,
            input_norm="coco" if args.coco else "imagenet", crop_size=crop, test_size=test_size,
            data_root=Path(args.data_root or DEFAULT_DATA_ROOTS[args.dataset]), image_format="JPEG" if voc else "PNG",
            labelled_list=f"{args.train_set}_labeled_{args.sets_id}",
            unlabelled_list=unlabelled_list_name(args.train_set, args.sets_id),
            val_list="valtiny" if args.valtiny else "val", files=files, pseudo_dir=pseudo_dir,
            labeling_record=pseudo_dir / LABELING_RECORD,
            protocol=Protocol(args.eval_protocol, window, stride, tuple(args.eval_scales), not args.eval_no_flip),
            val_batch=max(1, (args.batch_size_labeled + args.batch_size_pseudo) // world),
            label_batch=max(1, math.ceil(args.batch_size_labeled / world)),
            done=done, writable=tuple(writable))


def labeling_key(args: argparse.Namespace) -> dict:
    """Everything that determines a labelling pass's files."""
    return {
        "labeller": file_identity(args.continue_from),
        "dataset": args.dataset,
        "data_root": os.fspath(Path(args.data_root).resolve()) if args.data_root else None,
        "train_set": args.train_set,
        "sets_id": args.sets_id,
        "label_ratio": args.label_ratio,
        "label_stride": args.label_stride,
        "test_size": list(args.test_size) if args.test_size else None,
        "coco": args.coco,
        "backbone": args.backbone,
        "all_aspp_branches": args.all_aspp_branches,
        "mixed_precision": args.mixed_precision,
        "amp_dtype": args.amp_dtype if args.mixed_precision else None,
    }
