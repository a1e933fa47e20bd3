"""segmentation/main.py on bad input (docs/method.md §9.1 flags): every case ends with one line naming
the file or flag, exit 2, and nothing recorded as done."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmentation.models import deeplab_v2
from tests.test_seg_main import REPO, common, quiet, run, unlabelled_ids, voc  # noqa: F401 (fixtures)
from utils.checkpoint import save_checkpoint


def broken_copy(voc: Path, tmp: Path, mutate) -> Path:
    root = tmp / "VOC2012"
    shutil.copytree(voc, root)
    mutate(root)
    return root


def first_labelled(root: Path) -> str:
    return (root / "ImageSets" / "Segmentation" / "20_labeled_0.txt").read_text().split()[0]


def corrupt_image(root):
    (root / "JPEGImages" / f"{first_labelled(root)}.jpg").write_bytes(b"not a jpeg")


def corrupt_unlabelled_image(root):
    first = (root / "ImageSets" / "Segmentation" / "20_unlabeled_0.txt").read_text().split()[0]
    (root / "JPEGImages" / f"{first}.jpg").write_bytes(b"not a jpeg")


def label_out_of_range(root):
    path = root / "SegmentationClassAug" / f"{first_labelled(root)}.png"
    label = np.array(Image.open(path))
    label[0, 0] = 30
    Image.fromarray(label, mode="L").save(path)


def label_wrong_size(root):
    path = root / "SegmentationClassAug" / f"{first_labelled(root)}.png"
    Image.fromarray(np.zeros((7, 9), dtype=np.uint8), mode="L").save(path)


BAD_INPUTS = {
    "dataset folder missing": (None, ["--state", "2"], "nowhere"),
    "split file missing": (None, ["--state", "2", "--train-set", "7"], "7_labeled_0.txt"),
    "unreadable image": (corrupt_image, ["--state", "2"], ".jpg"),
    # --no-check-data: found when loaded, inside a DataLoader worker (the data check would find it first)
    "unreadable image in a loader worker": (corrupt_image, ["--state", "2", "--workers", "1", "--no-check-data"], ".jpg"),
    "unreadable image while labelling in a worker": (corrupt_unlabelled_image, [
        "--state", "1", "--labeling", "--continue-from", "VOC_CKPT", "--workers", "1", "--no-check-data"], ".jpg"),
    "label out of range": (label_out_of_range, ["--state", "2"], ".png"),
    "label size mismatch": (label_wrong_size, ["--state", "2"], ".png"),
    "pseudo folder missing": (None, ["--state", "1", "--pseudo-dir", "PSEUDO_GONE"], "PSEUDO_GONE"),
    "pseudo file missing": (None, ["--state", "1", "--pseudo-dir", "PSEUDO_PARTIAL"], ".npy"),
    "checkpoint not a checkpoint": (None, ["--state", "3", "--continue-from", "GARBAGE"], "GARBAGE"),
    "checkpoint of another model": (None, ["--state", "3", "--continue-from", "CITY_CKPT"], "CITY_CKPT"),
    "test without weights": (None, ["--state", "3"], "--continue-from"),
}


@pytest.fixture(scope="module")
def bad_files(voc, tmp_path_factory) -> Path:
    """A garbage file, checkpoints of a 19- and a 21-class model, a pseudo folder missing one file."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "GARBAGE").write_bytes(b"\x00garbage")
    save_checkpoint(folder / "CITY_CKPT", model=deeplab_v2(19, "mobilenet_v3_large", pretrained=None))
    save_checkpoint(folder / "VOC_CKPT", model=deeplab_v2(21, "mobilenet_v3_large", pretrained=None))
    partial = folder / "PSEUDO_PARTIAL"
    partial.mkdir()
    for sample_id in unlabelled_ids(voc)[1:]:
        np.save(partial / f"{sample_id}.npy", np.zeros((1, 1, 2), dtype=np.float32))
    return folder


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case, voc, bad_files, tmp_path, capsys):
    mutate, extra, expected = BAD_INPUTS[case]
    root = broken_copy(voc, tmp_path, mutate) if mutate else (tmp_path / "nowhere" if expected == "nowhere" else voc)
    extra = [str(bad_files / a) if a.isupper() and a.replace("_", "").isalpha() else a for a in extra]
    out = tmp_path / "out"
    rc, _, err = run(common(root, out, "--exp-name", "bad", "--epochs", "1", "--batch-size-labeled", "4", *extra), capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not (out / "bad.done.json").exists() and not (out / "log.txt").exists()


def test_cli_exit_status_and_one_line_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "segmentation.main", "--state", "3", "--device", "cpu",
                           "--out-dir", str(tmp_path)], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--continue-from" in proc.stderr
