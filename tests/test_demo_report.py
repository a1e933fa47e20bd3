"""segmentation.demo_report's pseudo-label accuracy, against counts worked out by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from segmentation import demo_report
from segmentation.palette import voc_palette
from utils.errors import UserError

# 3×4 image; 255 in the truth = no truth (a boundary), 255 in the pseudo labels = not kept
TRUTH = np.array([[0, 0, 1, 255],
                  [0, 2, 2, 1],
                  [255, 0, 1, 1]], dtype=np.uint8)
PSEUDO = np.array([[0, 255, 1, 1],
                   [1, 2, 255, 1],
                   [0, 0, 2, 255]], dtype=np.float32)
# By hand: 10 pixels have a truth; 7 of them are kept: (0,0) (0,2) (1,0) (1,1) (1,3) (2,1) (2,2);
# right: all but (1,0) (1 for 0) and (2,2) (2 for 1) -> 5. Object pixels (truth 1 or 2): (0,2) (1,1)
# (1,2) (1,3) (2,2) (2,3) = 6; kept: (0,2) (1,1) (1,3) (2,2) = 4; right: 3 ((2,2) is wrong).
HAND = {"valid": 10, "kept": 7, "right": 5, "object": 6, "object_kept": 4, "object_right": 3}


def test_label_counts_match_the_hand_count():
    counts = demo_report.label_counts(PSEUDO, TRUTH)
    assert dict(zip(demo_report.COUNT_NAMES, counts.tolist())) == HAND


def test_accuracy_percentages():
    acc = demo_report.accuracy(np.array([HAND[n] for n in demo_report.COUNT_NAMES]))
    assert acc == {"overall": round(100 * 5 / 7, 2), "object": 75.0, "kept": 70.0, "object_kept": round(100 * 4 / 6, 2)}
    assert math.isnan(demo_report.accuracy(np.zeros(6, dtype=np.int64))["object"])


def write_image(folder, truth_dir, sample_id, pseudo, truth):
    np.save(folder / f"{sample_id}.npy", np.stack([pseudo, np.full(pseudo.shape, 0.9, np.float32)], axis=-1))
    png = Image.fromarray(truth, mode="P")
    png.putpalette(voc_palette().reshape(-1).tolist())
    png.save(truth_dir / f"{sample_id}.png")


def test_pseudo_label_accuracy_sums_images_from_the_files(tmp_path):
    truth_dir = tmp_path / "SegmentationClassAug"
    truth_dir.mkdir()
    exp = "demo-0"
    for k in (1, 2):
        for m, other in (("c", "i"), ("i", "c")):
            folder = tmp_path / "pseudo" / f"{exp}__p{k - 1}--{other}-for-{exp}__p{k}--{m}"
            folder.mkdir(parents=True)
            write_image(folder, truth_dir, "a", PSEUDO, TRUTH)
            # a second image: 4 background pixels; model c's labels (phase 2) call them all class 1
            second = np.full((2, 2), 1 if (k, m) == (2, "c") else 255, np.float32)
            write_image(folder, truth_dir, "b", second, np.zeros((2, 2), np.uint8))
    acc = demo_report.pseudo_label_accuracy(tmp_path, exp, [0, 1, 2], truth_dir)
    assert sorted(acc) == ["1", "2"] and sorted(acc["1"]) == ["c", "i"]
    assert acc["1"]["c"] == {"overall": round(100 * 5 / 7, 2), "object": 75.0, "kept": 50.0,
                             "object_kept": round(100 * 4 / 6, 2)}
    # 11 kept, 5 right; objects unchanged
    assert acc["2"]["c"] == {"overall": round(100 * 5 / 11, 2), "object": 75.0, "kept": round(100 * 11 / 14, 2),
                             "object_kept": round(100 * 4 / 6, 2)}
    assert acc["2"]["i"] == acc["1"]["i"] == acc["1"]["c"]


def test_report_prints_and_records_the_accuracy(tmp_path, capsys):
    data_root = tmp_path / "VOC2012"
    (data_root / "SegmentationClassAug").mkdir(parents=True)
    (data_root / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(data_root / "JPEGImages" / "a.jpg")
    out = tmp_path / "out"
    exp = "demo-0"
    lines = [f"{exp}__p0--c: 40", f"{exp}__p0--i: 50", f"{exp}__p1--c: 45", f"{exp}__p1--i: 52",
             f"{exp}__oracle: 70"]
    out.mkdir()
    (out / "log.txt").write_text("\n".join(lines) + "\n")
    for m, other in (("c", "i"), ("i", "c")):
        folder = out / "pseudo" / f"{exp}__p0--{other}-for-{exp}__p1--{m}"
        folder.mkdir(parents=True)
        write_image(folder, data_root / "SegmentationClassAug", "a", PSEUDO, TRUTH)
    summary = demo_report.main(["--out", str(out), "--exp", exp, "--data-root", str(data_root), "--seconds", "60"])
    assert summary["baseline_miou"] == 50 and summary["dmt_miou"] == 52
    assert json.loads((out / "summary.json").read_text())["pseudo_labels"]["1"]["i"]["object"] == 75.0
    printed = capsys.readouterr().out
    assert "| DMT phase 1 | 45.00 | 52.00 | 71.4 / 75.0 | 71.4 / 75.0 |" in printed
    assert (out / "demo.png").stat().st_size > 5_000


def test_size_mismatch_is_one_clear_error(tmp_path):
    truth_dir = tmp_path / "gt"
    truth_dir.mkdir()
    folder = tmp_path / "labels"
    folder.mkdir()
    write_image(folder, truth_dir, "a", PSEUDO, np.zeros((5, 5), np.uint8))
    with pytest.raises(UserError, match="pseudo labels are 3x4"):
        demo_report.folder_accuracy(folder, truth_dir)
