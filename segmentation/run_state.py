"""Where a segmentation run's outputs go and whether they are already complete — decided from the
flags alone, without importing torch, so that rerunning a finished step costs a fraction of a second.

* Training and test runs use :class:`utils.run_files.RunFiles` (``<out-dir>/<exp>.pt``,
  ``.resume.pt``, ``_cfg.json``, ``.done.json``, ``log.txt``, ``tb/<exp>``); a run is finished
  when its done record exists.
* A labelling pass is complete when ``<pseudo-dir>/labeling.json`` exists, describes the same
  pass (labeller checkpoint — path, size and modification time —, data, split, ratio, sizes,
  precision) and lists exactly the folder's ``.npy`` files with their sizes and modification times.
  The labeller writes into ``<pseudo-dir>.partial`` and renames it into place only when every file
  is written, so a folder with the record is never half-written.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from utils.run_files import RunFiles, file_identity

LABELING_RECORD = "labeling.json"
PARTIAL_SUFFIX = ".partial"


def run_files(args: argparse.Namespace) -> RunFiles:
    return RunFiles(Path(args.out_dir), args.exp_name, tb_root=Path(args.log_dir) if args.log_dir else None)


def pseudo_dir(args: argparse.Namespace) -> Path:
    """``--pseudo-dir``, default ``<out-dir>/pseudo/<exp-name>``."""
    return Path(args.pseudo_dir) if args.pseudo_dir else Path(args.out_dir) / "pseudo" / args.exp_name


def launch_rank() -> int:
    """This process's torchrun rank, read before any process group exists (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def skip_if_finished(args: argparse.Namespace) -> bool:
    """True when the run already finished; rank 0 says so (and repairs a missing log.txt line)."""
    files = run_files(args)
    return files.skip_if_finished() if launch_rank() == 0 else files.done.is_file()


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


def labeling_done(args: argparse.Namespace) -> bool:
    """True when ``<pseudo-dir>`` holds a complete pass with these flags: its record describes the
    same pass and its ``.npy`` files are exactly the ones the record lists, with the recorded sizes
    and modification times (a missing, extra, truncated or rewritten file makes it incomplete, so
    the "rerun the labelling step" advice of a bad file leads to a fresh pass)."""
    folder = pseudo_dir(args)
    try:
        record = json.loads((folder / LABELING_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("key") != labeling_key(args):
        return False
    files = record.get("files")
    if not isinstance(files, dict) or len(files) != record.get("images"):
        return False
    try:
        return npy_manifest(folder) == files
    except OSError:
        return False


def npy_manifest(folder: Path) -> dict[str, list[int]]:
    """``{id: [size, mtime_ns]}`` of every ``<id>.npy`` below ``folder`` (Cityscapes ids hold a
    ``<city>/`` folder), sorted by id."""
    manifest = {}
    for root, _, names in os.walk(folder):
        rel = os.path.relpath(root, folder)
        for name in names:
            if name.endswith(".npy"):
                st = os.stat(os.path.join(root, name))
                sample_id = name[:-4] if rel == "." else f"{Path(rel).as_posix()}/{name[:-4]}"
                manifest[sample_id] = [st.st_size, st.st_mtime_ns]
    return dict(sorted(manifest.items()))
