"""data/prepare_voc.py on a tiny VOC 2012 + SBD tree written in the real formats."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image
from scipy.io import loadmat, savemat

from data import prepare_voc
from utils.errors import UserError, run_cli

H, W = 6, 8
VOC_TRAIN = ["2007_000032", "2007_000039"]
VOC_VAL = ["2007_000033", "2007_000042", "2007_000061"]
SBD_TRAIN = ["2007_000039", "2008_000002", "2008_000003", "2007_000033"]  # one VOC train, one VOC val id
SBD_VAL = ["2008_000008", "2007_000042"]  # one VOC val id
# (VOC train ∪ SBD train ∪ SBD val) − VOC val, sorted, by hand:
TRAINAUG_TEXT = "2007_000032\n2007_000039\n2008_000002\n2008_000003\n2008_000008\n"
COUNTS = ["--expect-counts", "5", "3"]


def voc_label(k: int) -> np.ndarray:
    """A VOC-style label: class k + 1 in a box with a 255 outline, background 0."""
    lab = np.zeros((H, W), np.uint8)
    lab[1:5, 2:7] = 255
    lab[2:4, 3:6] = k + 1
    return lab


def sbd_label(k: int) -> np.ndarray:
    """An SBD-style label (no void): class 20 - k on the left half."""
    lab = np.zeros((H, W), np.uint8)
    lab[:, : W // 2] = 20 - k
    return lab


def save_sbd_mat(path: Path, seg: np.ndarray) -> None:
    """SBD's cls/<id>.mat layout: struct GTcls {Boundaries: 20×1 cell of sparse, Segmentation, CategoriesPresent}."""
    boundaries = np.empty((20, 1), dtype=object)
    for c in range(20):
        boundaries[c, 0] = sp.csc_matrix(seg == c + 1)
    present = np.unique(seg[seg > 0]).astype(np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"GTcls": {"Boundaries": boundaries, "Segmentation": seg, "CategoriesPresent": present}})


def save_voc_png(path: Path, lab: np.ndarray) -> None:
    img = Image.fromarray(lab, "L").convert("P")
    img.putpalette([(i * 41) % 256 for i in range(768)])  # any palette: indices are the classes
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    all_ids = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
    for k, i in enumerate(all_ids):
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 10 * k, np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
    for i in VOC_TRAIN + VOC_VAL:
        save_voc_png(voc / "SegmentationClass" / f"{i}.png", voc_label(all_ids.index(i)))
    for i in SBD_TRAIN + SBD_VAL:
        save_sbd_mat(sbd / "cls" / f"{i}.mat", sbd_label(all_ids.index(i)))
    write_list(voc / "ImageSets/Segmentation/train.txt", VOC_TRAIN)
    write_list(voc / "ImageSets/Segmentation/val.txt", VOC_VAL)
    write_list(sbd / "train.txt", SBD_TRAIN)
    write_list(sbd / "val.txt", SBD_VAL)
    return voc, sbd


def run(voc: Path, sbd: Path, *extra: str) -> list[str]:
    return prepare_voc.main(["--voc-root", str(voc), "--sbd-root", str(sbd), *extra])


def test_fixture_mat_has_sbd_nesting(roots):
    _, sbd = roots
    mat = loadmat(sbd / "cls" / "2008_000002.mat")
    gt = mat["GTcls"]
    assert gt.shape == (1, 1)
    assert gt.dtype.names == ("Boundaries", "Segmentation", "CategoriesPresent")
    seg = gt[0, 0]["Segmentation"]
    assert seg.dtype == np.uint8 and seg.shape == (H, W)
    assert gt[0, 0]["Boundaries"].shape == (20, 1) and sp.issparse(gt[0, 0]["Boundaries"][0, 0])
    # torchvision's SBDataset reads it this way:
    np.testing.assert_array_equal(mat["GTcls"][0]["Segmentation"][0], seg)
    np.testing.assert_array_equal(prepare_voc.read_sbd_label(sbd / "cls" / "2008_000002.mat"), seg)


def test_builds_trainaug_and_labels(roots, capsys):
    voc, sbd = roots
    save_sbd_mat(sbd / "cls" / "2009_000001.mat", sbd_label(0))  # in no list: reported, not used
    run(voc, sbd, *COUNTS)
    assert (voc / "ImageSets/Segmentation/trainaug.txt").read_text() == TRAINAUG_TEXT
    all_ids = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
    out = voc / "SegmentationClassAug"
    assert sorted(p.stem for p in out.iterdir()) == all_ids  # 5 trainaug + 3 val, nothing else
    for k, i in enumerate(all_ids):
        with Image.open(out / f"{i}.png") as img:
            assert img.mode == "P"
            palette = np.array(img.getpalette()).reshape(-1, 3)
            got = np.array(img)
        # VOC colormap: 0 black, 1 = (128, 0, 0), 15 = (192, 128, 128), 255 = (224, 224, 192)
        assert palette[[0, 1, 15, 255]].tolist() == [[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]
        in_voc = i in VOC_TRAIN + VOC_VAL  # VOC's PNG wins over SBD's .mat (2007_000039, _000033, _000042)
        np.testing.assert_array_equal(got, voc_label(k) if in_voc else sbd_label(k))
    printed = capsys.readouterr().out
    assert "3 from SBD" in printed and "1 id (2009_000001)" in printed


def test_rerun_is_idempotent(roots, capsys):
    voc, sbd = roots
    run(voc, sbd, *COUNTS)
    out = voc / "SegmentationClassAug"
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    run(voc, sbd, *COUNTS)
    assert "0 label PNGs written, 8 already there" in capsys.readouterr().out
    run(voc, sbd, *COUNTS, "--overwrite")
    assert "8 label PNGs written" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert (voc / "ImageSets/Segmentation/trainaug.txt").read_text() == TRAINAUG_TEXT
    assert not [p for p in voc.rglob("*") if ".tmp-" in p.name]


def test_default_counts_are_the_real_ones_and_fail_loudly(roots, capsys):
    voc, sbd = roots
    assert run_cli(prepare_voc.main, ["--voc-root", str(voc), "--sbd-root", str(sbd)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "found trainaug 5, val 3, expected trainaug 10,582, val 1,449" in err
    assert not (voc / "SegmentationClassAug").exists()
    assert not (voc / "ImageSets/Segmentation/trainaug.txt").exists()
    run(voc, sbd, "--no-check-counts")  # custom sets: no count check
    assert (voc / "ImageSets/Segmentation/trainaug.txt").read_text() == TRAINAUG_TEXT


@pytest.mark.parametrize("remove, message", [
    ("JPEGImages/2008_000003.jpg", "no JPEGImages/<id>.jpg for 1 id (2008_000003)"),
    ("sbd:cls/2008_000008.mat", "cls/<id>.mat) for 1 id (2008_000008)"),
    ("SegmentationClass/2007_000061.png", "cls/<id>.mat) for 1 id (2007_000061)"),
])
def test_missing_file_is_named_and_nothing_is_written(roots, remove, message):
    voc, sbd = roots
    base, name = (sbd, remove[4:]) if remove.startswith("sbd:") else (voc, remove)
    (base / name).unlink()
    with pytest.raises(UserError, match=re.escape(message)):
        run(voc, sbd, *COUNTS)
    assert not (voc / "SegmentationClassAug").exists()
    assert not (voc / "ImageSets/Segmentation/trainaug.txt").exists()


def test_bad_sbd_value_and_size_mismatch_are_user_errors(roots):
    voc, sbd = roots
    bad = sbd_label(0)
    bad[0, 0] = 30
    save_sbd_mat(sbd / "cls" / "2008_000003.mat", bad)
    with pytest.raises(UserError, match=r"2008_000003\.mat: label value 30 is not a VOC class"):
        run(voc, sbd, *COUNTS)
    assert not (voc / "ImageSets/Segmentation/trainaug.txt").exists()
    save_sbd_mat(sbd / "cls" / "2008_000003.mat", np.zeros((H - 1, W), np.uint8))
    with pytest.raises(UserError, match=r"2008_000003\.mat: label is 5×8 but .*2008_000003\.jpg is 6×8"):
        run(voc, sbd, *COUNTS)


def test_wrong_mat_content_is_a_user_error(tmp_path):
    savemat(tmp_path / "x.mat", {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(UserError, match=r"x\.mat: no GTcls\.Segmentation"):
        prepare_voc.read_sbd_label(tmp_path / "x.mat")
    (tmp_path / "y.mat").write_bytes(b"not a mat file")
    with pytest.raises(UserError, match=r"y\.mat: cannot read"):
        prepare_voc.read_sbd_label(tmp_path / "y.mat")
