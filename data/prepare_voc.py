"""Build VOC 2012 ``trainaug`` (docs/method.md §5.1): 10,582 train + 1,449 val label PNGs from VOC 2012 and SBD.

    python -m data.prepare_voc --voc-root datasets/VOCdevkit/VOC2012 \\
        --sbd-root datasets/benchmark_RELEASE/dataset [--expect-counts 10582 1449 | --no-check-counts]

Inputs: the VOC 2012 trainval folder (``JPEGImages/``, ``SegmentationClass/``,
``ImageSets/Segmentation/{train,val}.txt``) and the SBD ``dataset`` folder (``cls/<id>.mat``, each a
struct ``GTcls`` whose ``Segmentation`` field is the H×W class map, and ``{train,val}.txt``).

Outputs, in the VOC folder:

* ``SegmentationClassAug/<id>.png`` for every id of trainaug and val: palette PNGs (standard VOC
  colormap) whose indices are the classes 0..20, 255 = void. The label comes from VOC's own
  ``SegmentationClass/<id>.png`` where that exists (VOC wins, its 255 outlines kept), else from
  SBD's ``cls/<id>.mat``.
* ``ImageSets/Segmentation/trainaug.txt``: sorted (VOC train ∪ SBD train ∪ SBD val) − VOC val, every
  line ending in "\\n"; written last, so its presence means the label folder is complete.

Everything is checked before anything is written: the list sizes (10,582 / 1,449 unless
``--expect-counts`` or ``--no-check-counts``), a JPEG and a label source for every id. During the
conversion each label is checked (values 0..20 or 255, same size as its JPEG). Every file is written
atomically; a rerun skips label PNGs that already exist (``--overwrite`` rewrites them, with the same
bytes for the same sources).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from data.prepare_common import add_count_flags, add_workers_flag, check_counts, examples, run_jobs
from segmentation.datasets import read_index_png
from segmentation.run_config import VOC_NUM_CLASSES
from segmentation.generate_splits import id_list_text
from segmentation.palette import VOC_PALETTE
from segmentation.transforms import IGNORE_INDEX
from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import atomic_path, read_id_list, require_dir, write_text_atomic

VOC_TRAINAUG_COUNT = 10582
VOC_VAL_COUNT = 1449
SETS_SUBDIR = Path("ImageSets/Segmentation")
OUT_LABEL_DIR = "SegmentationClassAug"
VOC_HINT = "extract VOCtrainval_11-May-2012.tar so that --voc-root is VOCdevkit/VOC2012"
SBD_HINT = "extract benchmark.tgz so that --sbd-root is benchmark_RELEASE/dataset"


def trainaug_ids(voc_train: Sequence[str], voc_val: Sequence[str], sbd_train: Sequence[str],
                 sbd_val: Sequence[str]) -> list[str]:
    """Sorted (VOC train ∪ SBD train ∪ SBD val) − VOC val: the 10,582 trainaug ids for VOC 2012."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def files_by_stem(folder: Path, suffix: str) -> dict[str, Path]:
    """``{stem: path}`` of the ``*suffix`` files directly in ``folder`` (empty if it does not exist)."""
    if not folder.is_dir():
        return {}
    return {name[:-len(suffix)]: folder / name for name in os.listdir(folder) if name.endswith(suffix)}


def label_sources(ids: Sequence[str], voc_pngs: dict[str, Path], sbd_mats: dict[str, Path]
                  ) -> tuple[dict[str, Path], list[str]]:
    """(``{id: source}`` with VOC's PNG winning over SBD's .mat, ids with neither)."""
    sources, missing = {}, []
    for i in ids:
        source = voc_pngs.get(i) or sbd_mats.get(i)
        if source is None:
            missing.append(i)
        else:
            sources[i] = source
    return sources, missing


def read_sbd_label(path: Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` file as an H×W integer array."""
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False, variable_names=["GTcls"])
    except FileNotFoundError:
        raise UserError(f"{path}: SBD label file not found; {SBD_HINT}") from None
    except (MatReadError, OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: cannot read the .mat file ({' '.join(str(exc).split())}); "
                        f"re-extract it ({SBD_HINT})") from None
    seg = getattr(mat.get("GTcls"), "Segmentation", None)
    if seg is None:
        raise UserError(f"{path}: no GTcls.Segmentation in this file (is it from SBD's cls/ folder, "
                        f"not inst/?); {SBD_HINT}")
    seg = np.asarray(seg)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise UserError(f"{path}: GTcls.Segmentation is a {seg.dtype} array of shape {seg.shape}, expected an "
                        f"H×W integer class map; {SBD_HINT}")
    return seg


def read_label(source: Path) -> np.ndarray:
    """The class map of a label source (VOC palette PNG or SBD .mat), values checked."""
    if source.suffix == ".mat":
        labels = read_sbd_label(source)
    else:
        labels = read_index_png(source, f"use VOC's SegmentationClass palette PNGs ({VOC_HINT})")
    bad = ((labels < 0) | (labels >= VOC_NUM_CLASSES)) & (labels != IGNORE_INDEX)
    if bad.any():
        raise UserError(f"{source}: label value {int(labels[bad].flat[0])} is not a VOC class "
                        f"(0..{VOC_NUM_CLASSES - 1} or {IGNORE_INDEX}); replace the file")
    return labels.astype(np.uint8)


def jpeg_hw(path: Path) -> tuple[int, int]:
    """(height, width) from the JPEG header."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: cannot read image ({' '.join(str(exc).split())}); {VOC_HINT}") from None


def write_label_png(path: Path, labels: np.ndarray) -> None:
    """Write an H×W uint8 class map as a palette PNG with the VOC colormap, atomically."""
    img = Image.fromarray(labels)
    img.putpalette(VOC_PALETTE.tobytes())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def convert_one(job: tuple[Path, Path, Path]) -> None:
    """(label source, JPEG, output PNG): read and check the label, write the PNG."""
    source, jpeg, out = job
    labels = read_label(source)
    if labels.shape != jpeg_hw(jpeg):
        raise UserError(f"{source}: label is {labels.shape[0]}×{labels.shape[1]} but {jpeg} is "
                        f"{'×'.join(map(str, jpeg_hw(jpeg)))}; the label belongs to another image")
    write_label_png(out, labels)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m data.prepare_voc",
                                description="Build VOC 2012 SegmentationClassAug + trainaug.txt from VOC 2012 and SBD.")
    p.add_argument("--voc-root", default="datasets/VOCdevkit/VOC2012",
                   help="the VOC2012 folder (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)")
    p.add_argument("--sbd-root", default="datasets/benchmark_RELEASE/dataset",
                   help="SBD's dataset folder (cls/, train.txt, val.txt)")
    add_count_flags(p, ("trainaug", "val"), (VOC_TRAINAUG_COUNT, VOC_VAL_COUNT))
    p.add_argument("--overwrite", action="store_true",
                   help="rewrite label PNGs that already exist (default: keep them)")
    add_workers_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> list[str]:
    args = build_parser().parse_args(argv)
    voc_root = require_dir(args.voc_root, "VOC2012", VOC_HINT)
    sbd_root = require_dir(args.sbd_root, "SBD dataset", SBD_HINT)
    sets_dir = voc_root / SETS_SUBDIR
    voc_train = read_id_list(sets_dir / "train.txt", VOC_HINT)
    voc_val = read_id_list(sets_dir / "val.txt", VOC_HINT)
    sbd_train = read_id_list(sbd_root / "train.txt", SBD_HINT)
    sbd_val = read_id_list(sbd_root / "val.txt", SBD_HINT)
    trainaug = trainaug_ids(voc_train, voc_val, sbd_train, sbd_val)
    val = sorted(set(voc_val))
    list_info = (f"VOC train {len(voc_train):,}, VOC val {len(voc_val):,}, SBD train {len(sbd_train):,}, "
                 f"SBD val {len(sbd_val):,}")
    check_counts(args, {"trainaug": len(trainaug), "val": len(val)}, sets_dir, list_info)

    all_ids = trainaug + val
    jpegs = files_by_stem(require_dir(voc_root / "JPEGImages", "VOC JPEGImages", VOC_HINT), ".jpg")
    voc_pngs = files_by_stem(voc_root / "SegmentationClass", ".png")
    sbd_mats = files_by_stem(sbd_root / "cls", ".mat")
    sources, no_label = label_sources(all_ids, voc_pngs, sbd_mats)
    no_jpeg = [i for i in all_ids if i not in jpegs]
    problems = []
    if no_jpeg:
        problems.append(f"no JPEGImages/<id>.jpg for {examples(no_jpeg)} ({VOC_HINT})")
    if no_label:
        problems.append(f"no label source (neither SegmentationClass/<id>.png nor {sbd_root / 'cls'}/<id>.mat) "
                        f"for {examples(no_label)} ({SBD_HINT})")
    if problems:
        raise UserError(f"{voc_root}: " + "; ".join(problems))

    wanted = set(all_ids)
    out_dir = voc_root / OUT_LABEL_DIR
    present = files_by_stem(out_dir, ".png")
    unused_mats = sorted(set(sbd_mats) - wanted)
    extra_pngs = sorted(set(present) - wanted)
    if unused_mats:
        print(f"note: {examples(unused_mats)} of {sbd_root / 'cls'} are in neither list; not used", flush=True)
    if extra_pngs:
        print(f"note: {examples(extra_pngs)} in {out_dir} are in neither trainaug nor val; left alone", flush=True)

    todo = [i for i in all_ids if args.overwrite or i not in present]
    jobs = [(sources[i], jpegs[i], out_dir / f"{i}.png") for i in todo]
    for _ in run_jobs(convert_one, jobs, args.workers):
        pass
    write_text_atomic(sets_dir / "trainaug.txt", id_list_text(trainaug))
    from_voc = sum(1 for i in all_ids if sources[i].suffix == ".png")
    print(f"{out_dir}: {len(todo):,} label PNGs written, {len(all_ids) - len(todo):,} already there "
          f"({from_voc:,} from VOC SegmentationClass, {len(all_ids) - from_voc:,} from SBD); "
          f"{sets_dir / 'trainaug.txt'}: {len(trainaug):,} ids; val: {len(val):,} ids ({list_info})", flush=True)
    return trainaug


if __name__ == "__main__":
    sys.exit(run_cli(main))
