"""The data check before the work starts (utils/data_check.py): header-only checks of every listed
image and label (exists, format, label mode, size pair, truncation), first problem in list order,
its speed on 10,582 pairs, its callers in segmentation.main (fails in seconds, before any training)
and classification (CIFAR pickles; a label ratio too small for the unlabelled set)."""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classification import main_dmt
from classification.options import check_label_ratio, smallest_label_ratio
from segmentation import training
from segmentation.generate_splits import id_list_text
from segmentation.main import main as seg_main
from tests.helpers import cifar_with_splits, seg_main_argv, voc_with_split
from utils.data_check import Item, check_items
from utils.errors import UserError, run_cli
from utils.pseudo_labels import global_confidence_threshold


def jpeg_bytes(w=40, h=30, seed=0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(w=40, h=30, mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def pair(tmp_path):
    def make(name, image=None, label=None):
        img, lab = tmp_path / f"{name}.jpg", tmp_path / f"{name}.png"
        img.write_bytes(jpeg_bytes() if image is None else image)
        lab.write_bytes(png_bytes() if label is None else label)
        return Item(img, lab)
    return make


def problem(items, **kw) -> str:
    with pytest.raises(UserError) as info:
        check_items(items, image_formats=("JPEG",), **kw)
    return str(info.value)


def test_good_pairs_and_images_only_pass(pair, tmp_path):
    items = [pair("a"), pair("b", label=png_bytes(mode="P")), Item(pair("c").image)]
    trailing = tmp_path / "trailing.jpg"  # bytes after the end-of-image marker are tolerated
    trailing.write_bytes(jpeg_bytes() + b"\x00" * 100)
    assert check_items(items + [Item(trailing)], image_formats=("JPEG",)) == 4


@pytest.mark.parametrize("case,expected", [
    ("missing image", "image file not found"),
    ("truncated jpeg", "truncated"),
    ("truncated png label", "truncated"),
    ("not an image", "not a readable image"),
    ("label is rgb", "mode RGB"),
    ("label size differs", "differs from its image"),
    ("png where jpeg expected", "is PNG, expected JPEG"),
])
def test_each_problem_is_one_line_naming_the_file(case, expected, pair, tmp_path):
    jpeg, png = jpeg_bytes(), png_bytes()
    item = {
        "missing image": lambda: Item(tmp_path / "gone.jpg", pair("x").label),
        "truncated jpeg": lambda: pair("x", image=jpeg[: len(jpeg) // 2]),
        "truncated png label": lambda: pair("x", label=png[:-12]),
        "not an image": lambda: pair("x", image=b"not a jpeg at all"),
        "label is rgb": lambda: pair("x", label=png_bytes(mode="RGB")),
        "label size differs": lambda: pair("x", label=png_bytes(w=41)),
        "png where jpeg expected": lambda: pair("x", image=png_bytes(mode="RGB")),
    }[case]()
    message = problem([pair("ok"), item])
    bad = item.label if case.startswith(("truncated png", "label")) else item.image
    assert message.startswith(f"{bad}: ") and expected in message and "\n" not in message
    assert "--no-check-data" in message


def test_first_problem_in_list_order_is_reported(pair, tmp_path):
    items = [pair(f"ok{i}") for i in range(50)] + [Item(tmp_path / "first.jpg"), Item(tmp_path / "second.jpg")]
    assert problem(items, threads=8).startswith(f"{tmp_path / 'first.jpg'}: ")


def test_10582_pairs_take_seconds(tmp_path):
    """VOC trainaug's size (hard links to one 500x375 JPEG and one 500x375 label PNG)."""
    src_img, src_lab = tmp_path / "src.jpg", tmp_path / "src.png"
    src_img.write_bytes(jpeg_bytes(500, 375))
    src_lab.write_bytes(png_bytes(500, 375, mode="P"))
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    items = []
    for i in range(10582):
        img, lab = tmp_path / "img" / f"{i}.jpg", tmp_path / "lab" / f"{i}.png"
        img.hardlink_to(src_img)
        lab.hardlink_to(src_lab)
        items.append(Item(img, lab))
    start = time.perf_counter()
    assert check_items(items, image_formats=("JPEG",)) == 10582
    seconds = time.perf_counter() - start
    print(f"data check: 10,582 pairs in {seconds:.2f} s")
    assert seconds < 30  # ~3 s measured on the 2-core CI machine


# ------------------------------------------------------------------------------- segmentation.main
@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return voc_with_split(tmp_path_factory.mktemp("voc-check"), num_train=8, num_val=2, size_range=(30, 36), seed=5)


def seg_argv(voc: Path, out: Path, *extra: str) -> list[str]:
    return seg_main_argv(voc, out, "--exp-name", "r", "--epochs", "1", *extra, crop=17, test_size=37)


@pytest.mark.parametrize("state,bad_list,how", [("2", "20_labeled_0", "missing"), ("2", "val", "truncated"),
                                                ("1", "20_unlabeled_0", "truncated")])
def test_a_bad_listed_image_fails_in_seconds_before_training(state, bad_list, how, voc, tmp_path, capsys, monkeypatch):
    import shutil
    root = tmp_path / "VOC2012"
    shutil.copytree(voc, root)
    lists = root / "ImageSets" / "Segmentation"
    ids = (lists / f"{bad_list}.txt").read_text().split()
    if how == "missing":
        bad = root / "JPEGImages" / "2099_000001.jpg"
        (lists / f"{bad_list}.txt").write_text(id_list_text(ids + ["2099_000001"]))
    else:
        bad = root / "JPEGImages" / f"{ids[-1]}.jpg"
        bad.write_bytes(bad.read_bytes()[:-200])
    calls = []
    monkeypatch.setattr(training, "run_training", lambda *a: calls.append(a))
    extra = ["--loss", "online"] if state == "1" else []
    start = time.perf_counter()
    rc = run_cli(seg_main, seg_argv(root, tmp_path / "out", "--state", state, *extra))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.splitlines() == [err] and err.startswith(f"error: {bad}: ")
    assert {"missing": "not found", "truncated": "truncated"}[how] in err
    assert time.perf_counter() - start < 10 and calls == []  # nothing trained, before the first iteration
    assert not list((tmp_path / "out").glob("r*"))
    # --no-check-data skips the check: the run goes on to training
    assert run_cli(seg_main, seg_argv(root, tmp_path / "out", "--state", state, *extra, "--no-check-data")) == 0
    assert len(calls) == 1


# --------------------------------------------------------------------------------- classification
def test_label_ratio_check_agrees_with_the_curriculum_selection():
    """An error exactly where the original's selection keeps no image or all but one (distinct
    confidences), for every r on a fine grid; the smallest usable ratio passes and keeps >= 1."""
    for n in (5, 37, 400, 48_800):
        conf = torch.randperm(n).float() / n + 0.001
        for r in [k / (20 * n) for k in range(1, 200)] + [smallest_label_ratio(n)]:
            if r >= 1:
                continue
            kept = int((conf > global_confidence_threshold(conf, r)).sum())
            try:
                check_label_ratio(r, n, "split")
                ok = True
            except UserError:
                ok = False
            assert ok == (kept not in (0, n - 1)), (n, r, kept)
        smallest = smallest_label_ratio(n)
        assert int((conf > global_confidence_threshold(conf, smallest)).sum()) >= 1
        below = float(f"{smallest * (1 - 1e-3):.6g}")
        with pytest.raises(UserError, match=f"--label-ratio >= {smallest:g}"):
            check_label_ratio(below, n, "split")
    assert smallest_label_ratio(48_800) == 6.148e-05  # 3/48,800 = 6.1475e-05, rounded up
    assert smallest_label_ratio(3) == 1.0


def test_classification_labelling_with_a_too_small_ratio_fails_before_the_model_loads(tmp_path, capsys):
    root = cifar_with_splits(tmp_path / "cifar", sizes=(1,))
    (tmp_path / "GARBAGE.pt").write_bytes(b"not a checkpoint")  # never opened: the ratio check comes first
    rc = run_cli(main_dmt.main, ["--labeling", "--data-root", str(root), "--out-dir", str(tmp_path / "out"),
                                 "--pseudo-dir", str(tmp_path / "pseudo"), "--train-set", "1_seed1",
                                 "--label-ratio", "0.05", "--continue-from", str(tmp_path / "GARBAGE.pt"),
                                 "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    # 40 unlabelled images: r·N = 2 -> index -1, nothing kept; smallest usable 3/40 = 0.075
    assert rc == 2 and err.splitlines() == [err] and "--label-ratio 0.05" in err and ">= 0.075" in err, err
    assert not (tmp_path / "pseudo").exists() or not list((tmp_path / "pseudo").iterdir())
    rc = run_cli(main_dmt.main, ["--data-root", str(root), "--out-dir", str(tmp_path / "out"), "--train-set", "1_seed1",
                                 "--pseudo-dir", str(tmp_path / "pseudo"), "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.splitlines() == [err] and "_pseudo" in err  # the first missing file, at once
