"""Split tools: released VOC/City splits bit for bit, DMS subsets, SBD split, Cityscapes lists."""
from __future__ import annotations

import hashlib
import math
import os
import random
from pathlib import Path

import pytest

from segmentation import cityscapes_lists, dms_sample, generate_splits, sbd_split
from segmentation.generate_splits import labeled_count, make_splits
from utils.errors import UserError

# The released split lists' train ids and sha256 sums (the original repository's files, not shipped
# here): set DMT_REFERENCE_DIR to a folder holding PASCAL_VOC_2012_train_ids.txt,
# Cityscapes_train_ids.txt and released_splits.sha256 to check the generated splits bit for bit.
REFERENCE = Path(os.environ.get("DMT_REFERENCE_DIR", "/nonexistent-dmt-reference"))
LIST_FILES = {"voc": ("PASCAL_VOC_2012_train_ids.txt", "PASCAL_VOC_2012"),
              "city": ("Cityscapes_train_ids.txt", "Cityscapes")}


def reference_ids(dataset: str) -> list[str]:
    path = REFERENCE / LIST_FILES[dataset][0]
    if not path.is_file():
        pytest.skip(f"{path} absent (set DMT_REFERENCE_DIR): cannot check against the released splits")
    return path.read_text().splitlines()


def released_hashes(folder: str) -> dict[str, str]:
    path = REFERENCE / "released_splits.sha256"
    if not path.is_file():
        pytest.skip(f"{path} absent (set DMT_REFERENCE_DIR): cannot check against the released splits")
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
    return {name.split("/", 1)[1]: digest for digest, name in pairs if name.startswith(folder + "/")}


def read_lines(path: Path) -> list[str]:
    text = path.read_text()
    assert text.endswith("\n")
    return text[:-1].split("\n")


@pytest.mark.parametrize("dataset", ["voc", "city"])
def test_cli_reproduces_released_splits(dataset, tmp_path):
    ids = reference_ids(dataset)
    expected = released_hashes(LIST_FILES[dataset][1])
    assert len(expected) == {"voc": 39, "city": 21}[dataset]
    train_list = tmp_path / "train.txt"
    train_list.write_text("\n".join(reversed(ids)))  # unsorted, no final newline: must not matter
    generate_splits.main(["--dataset", dataset, "--train-list", str(train_list), "--out-dir", str(tmp_path / "out")])
    for name, digest in expected.items():
        assert hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest() == digest, name


def test_labeled_counts_match_spec():
    voc = {f: labeled_count(10582, f) for f in (105.82, 50, 20, 8, 4, 2)}
    assert voc == {105.82: 100, 50: 211, 20: 530, 8: 1322, 4: 2645, 2: 5291}  # 529 % 8 == 1 -> 530
    assert {f: labeled_count(2975, f) for f in (29.75, 8, 4)} == {29.75: 100, 8: 371, 4: 743}


def test_small_case_by_hand(tmp_path):
    ids = [f"img{k:02d}" for k in range(17)]
    # n = floor(17/f): f=2 -> 8; f=4 -> 4; f=8 -> 2; f=16 -> 1, bumped to 2 (1 % 8 == 1); f=5.5 -> 3
    files = make_splits(list(reversed(ids)), [2, 4, 8, 16, 5.5])
    rng = random.Random()  # independent re-implementation of the shuffle stream
    rng.seed(7777)
    order = sorted(ids)
    for i in range(3):
        rng.shuffle(order)
        assert files[f"1_labeled_{i}.txt"] == order and files[f"0_unlabeled_{i}.txt"] == order
        for name, n in (("2", 8), ("4", 4), ("8", 2), ("16", 2), ("6", 3)):
            assert files[f"{name}_labeled_{i}.txt"] == order[:n]
            assert files[f"{name}_unlabeled_{i}.txt"] == order[n:]
    assert files["1_labeled_0.txt"] != files["1_labeled_1.txt"]
    assert len(files) == 3 * (2 * 5 + 2)


def test_cli_writes_newline_terminated_files_and_checks_input(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("".join(f"id{k}\n" for k in range(40)))
    generate_splits.main(["--train-list", str(train), "--factors", "2", "4"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["train.txt"] + [f"{n}_{kind}_{i}.txt" for i in range(3)
                         for n, kind in (("2", "labeled"), ("2", "unlabeled"), ("4", "labeled"),
                                         ("4", "unlabeled"), ("1", "labeled"), ("0", "unlabeled"))])
    whole = read_lines(tmp_path / "1_labeled_2.txt")
    assert sorted(whole) == sorted(f"id{k}" for k in range(40))
    assert read_lines(tmp_path / "2_labeled_2.txt") + read_lines(tmp_path / "2_unlabeled_2.txt") == whole
    assert read_lines(tmp_path / "4_labeled_2.txt") == whole[:10]
    with pytest.raises(UserError, match="leaves 0 of 40"):
        generate_splits.main(["--train-list", str(train), "--factors", "50"])
    with pytest.raises(UserError, match="split file not found"):
        generate_splits.main(["--train-list", str(tmp_path / "missing.txt")])
    train.write_text("a\nb\na\nc\n")
    with pytest.raises(UserError, match="duplicated"):
        generate_splits.main(["--train-list", str(train), "--factors", "2"])


def test_dms_subsets(tmp_path):
    path = REFERENCE / LIST_FILES["voc"][0]
    ids = path.read_text().splitlines() if path.is_file() else [f"synthetic_{k:05d}" for k in range(10582)]
    train = tmp_path / "trainaug.txt"
    train.write_text("".join(f"{i}\n" for i in ids))
    generate_splits.main(["--dataset", "voc", "--train-list", str(train)])
    dms_sample.main(["--sets-dir", str(tmp_path)])
    rng = random.Random()  # independent re-implementation: one stream, i outer, f inner
    rng.seed(7777)
    sizes = {"106": (100, 80, 60), "50": (211, 168, 125), "20": (530, 424, 318), "8": (1322, 1057, 792)}
    for i in range(3):
        for f in ("8", "20", "50", "106"):
            labeled = read_lines(tmp_path / f"{f}_labeled_{i}.txt")
            left = read_lines(tmp_path / f"{f}-l_labeled_{i}.txt")
            right = read_lines(tmp_path / f"{f}-r_labeled_{i}.txt")
            total, each, shared = sizes[f]
            assert len(labeled) == total and len(left) == len(right) == each
            assert len(set(left) & set(right)) == shared == total - 2 * math.ceil(0.2 * total)
            assert set(left) | set(right) == set(labeled)
            rng.shuffle(labeled)
            assert left == labeled[:each] and right == labeled[total - each:]


def test_dms_missing_split_file(tmp_path):
    with pytest.raises(UserError, match="8_labeled_0.txt"):
        dms_sample.main(["--sets-dir", str(tmp_path)])


def test_sbd_split(tmp_path):
    sets = tmp_path / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "trainaug.txt").write_text("2007_01\n2007_02\n2008_03\n2008_04\n2009_05\n2010_06")
    (sets / "train.txt").write_text("2008_04\n2007_01\n")
    sbd_split.main(["--voc-root", str(tmp_path)])
    assert (sets / "train_labeled_0.txt").read_text() == "2008_04\n2007_01\n"
    assert (sets / "train_unlabeled_0.txt").read_text() == "2007_02\n2008_03\n2009_05\n2010_06\n"
    (sets / "train.txt").write_text("2011_99\n")
    with pytest.raises(UserError, match="not in trainaug"):
        sbd_split.main(["--voc-root", str(tmp_path)])
    with pytest.raises(UserError, match="folder not found"):
        sbd_split.main(["--voc-root", str(tmp_path / "nowhere")])


def test_cityscapes_lists(tmp_path):
    images = {"train": {"zurich": ["000001_000019", "000000_000019"], "aachen": ["000010_000019", "000002_000019"]},
              "val": {"lindau": ["000000_000019"], "frankfurt": ["000001_000077"]},
              "test": {"berlin": ["000000_000019"]}}
    for split, cities in images.items():
        for city, stems in cities.items():
            folder = tmp_path / "leftImg8bit" / split / city
            folder.mkdir(parents=True)
            for stem in stems:
                (folder / f"{city}_{stem}_leftImg8bit.png").write_bytes(b"")
            (folder / "notes.txt").write_text("not an image")
    cityscapes_lists.main(["--city-root", str(tmp_path)])
    lists = tmp_path / "data_lists"
    assert (lists / "train.txt").read_text() == ("aachen/aachen_000002_000019\naachen/aachen_000010_000019\n"
                                                 "zurich/zurich_000000_000019\nzurich/zurich_000001_000019\n")
    assert (lists / "val.txt").read_text() == "frankfurt/frankfurt_000001_000077\nlindau/lindau_000000_000019\n"
    assert (lists / "test.txt").read_text() == "berlin/berlin_000000_000019\n"
    missing = tmp_path / "other"
    (missing / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="no \\*_leftImg8bit.png images"):
        cityscapes_lists.main(["--city-root", str(missing)])
    (missing / "leftImg8bit" / "train" / "bonn").mkdir()
    (missing / "leftImg8bit" / "train" / "bonn" / "bonn_000000_000019_leftImg8bit.png").write_bytes(b"")
    with pytest.raises(UserError, match="Cityscapes val images folder not found"):
        cityscapes_lists.main(["--city-root", str(missing)])
    assert not (missing / "data_lists").exists()
