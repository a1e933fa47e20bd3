"""data/prepare_cityscapes.py on a tiny synthetic Cityscapes folder (real file layout and label ids)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import prepare_cityscapes as pc
from data.synthetic import make_cityscapes
from utils.errors import UserError, run_cli

COUNTS = ["--expect-counts", "4", "2"]
# data.synthetic spreads entries round-robin over the cities, sequence numbers from 000000:
TRAIN_TEXT = ("aachen/aachen_000000_000019\nbochum/bochum_000000_000019\n"
              "bremen/bremen_000000_000019\ncologne/cologne_000000_000019\n")
VAL_TEXT = "frankfurt/frankfurt_000000_000019\nlindau/lindau_000000_000019\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_cityscapes(tmp_path / "cityscapes", num_train=4, num_val=2, size=(32, 64))


def run(root: Path, *extra: str) -> dict:
    return pc.main(["--city-root", str(root), *extra])


def labels_file(root: Path, split: str, entry: str) -> Path:
    return root / "gtFine" / split / f"{entry}_gtFine_labelIds.png"


def test_writes_lists_and_summarises_train_ids(root, capsys):
    run(root, *COUNTS)
    assert (root / "data_lists" / "train.txt").read_text() == TRAIN_TEXT
    assert (root / "data_lists" / "val.txt").read_text() == VAL_TEXT
    assert not (root / "data_lists" / "test.txt").exists()  # no leftImg8bit/test here
    # Ignored share, computed independently: pixels whose id is not one of the 19 evaluated ids of docs/method.md §5.1.
    evaluated = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    labels = np.stack([np.array(Image.open(p)) for p in sorted((root / "gtFine" / "train").rglob("*labelIds.png"))])
    ignored = 100.0 * (~np.isin(labels, evaluated)).mean()
    present = len(set(np.unique(labels)) & set(evaluated))
    out = capsys.readouterr().out
    assert f"train: 4 images, {present}/19 train ids present, {ignored:.1f}% of pixels ignored (255)" in out
    run(root, *COUNTS)  # rerun: same files
    assert (root / "data_lists" / "train.txt").read_text() == TRAIN_TEXT


def test_train_id_histogram_by_hand():
    ids = np.array([7, 7, 8, 26, 0, 33, 1, 4, 23])
    got = pc.train_id_histogram(np.bincount(ids, minlength=34))
    want = np.zeros(20, np.int64)
    want[0], want[1], want[13], want[18], want[10] = 2, 1, 1, 1, 1  # road x2, sidewalk, car, bicycle, sky
    want[19] = 3  # ids 0, 1, 4 are ignored
    np.testing.assert_array_equal(got, want)


def test_default_counts_fail_loudly_and_write_nothing(root, capsys):
    assert run_cli(pc.main, ["--city-root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "found train 4, val 2, expected train 2,975, val 500" in err
    assert not (root / "data_lists").exists()
    run(root, "--no-check-counts", "--no-check-labels")
    assert (root / "data_lists" / "val.txt").read_text() == VAL_TEXT


def test_missing_label_is_named(root):
    labels_file(root, "val", "lindau/lindau_000000_000019").unlink()
    with pytest.raises(UserError, match=re.escape("no *_gtFine_labelIds.png for 1 id (lindau/lindau_000000_000019)")):
        run(root, *COUNTS)
    assert not (root / "data_lists").exists()


def test_orphan_label_is_reported(root, capsys):
    (root / "leftImg8bit" / "train" / "bremen" / "bremen_000000_000019_leftImg8bit.png").unlink()
    run(root, "--expect-counts", "3", "2")
    assert "labels without an image for 1 id (bremen/bremen_000000_000019)" in capsys.readouterr().out
    assert "bremen" not in (root / "data_lists" / "train.txt").read_text()


def test_bad_label_values_and_sizes(root):
    path = labels_file(root, "train", "bochum/bochum_000000_000019")
    lab = np.array(Image.open(path))
    Image.fromarray(np.where(lab == 23, 34, lab).astype(np.uint8)).save(path)
    with pytest.raises(UserError, match=r"bochum_000000_000019_gtFine_labelIds\.png: label id 34 out of range"):
        run(root, *COUNTS)
    Image.fromarray(lab[:-1]).save(path)
    with pytest.raises(UserError, match=r"label is 31×64 but its image is 32×64"):
        run(root, *COUNTS)
    assert not (root / "data_lists").exists()


def test_train_ids_passed_as_label_ids_are_caught(root):
    for path in (root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"):
        lab = np.array(Image.open(path))
        Image.fromarray((lab % 19).astype(np.uint8)).save(path)
    with pytest.raises(UserError, match="look like train ids, not labelIds"):
        run(root, *COUNTS)
