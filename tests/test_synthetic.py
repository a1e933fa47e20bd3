"""Synthetic datasets: exact on-disk formats, determinism, atomicity, and 'colour is not the class'."""
from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
from PIL import Image

from data import synthetic as syn
from data.synthetic import voc as syn_voc
from utils.errors import UserError, run_cli

VOC_TRAIN, VOC_VAL = 24, 6
CITY_TRAIN, CITY_VAL = 12, 4


def voc_colormap_reference() -> list[tuple[int, int, int]]:
    """The VOC devkit's bitget colormap, written out with plain Python loops."""
    cmap = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap.append((r, g, b))
    return cmap


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    base = syn.make_voc(root, num_train=VOC_TRAIN, num_val=VOC_VAL, size_range=(40, 64), seed=3)
    return root, base


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("city")
    syn.make_cityscapes(root, num_train=CITY_TRAIN, num_val=CITY_VAL, size=(48, 96), seed=1)
    return root


def read_lines(path):
    text = path.read_text()
    assert text.endswith("\n")
    return text.splitlines()


# ---------------------------------------------------------------- VOC
def test_voc_layout_and_lists(voc):
    root, base = voc
    assert base == root / "VOCdevkit" / "VOC2012"
    lists = base / "ImageSets" / "Segmentation"
    trainaug, train, val = (read_lines(lists / f"{n}.txt") for n in ("trainaug", "train", "val"))
    assert len(trainaug) == VOC_TRAIN and len(val) == VOC_VAL
    for ids in (trainaug, train, val):
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all(re.fullmatch(r"20(0[7-9]|1[01])_\d{6}", i) for i in ids)
    assert not set(trainaug) & set(val)
    assert set(train) <= set(trainaug) and 1 <= len(train) < len(trainaug)
    all_ids = set(trainaug) | set(val)
    assert {p.stem for p in (base / "JPEGImages").iterdir()} == all_ids
    assert {p.stem for p in (base / "SegmentationClassAug").iterdir()} == all_ids
    assert {p.suffix for p in (base / "JPEGImages").iterdir()} == {".jpg"}
    assert sorted(p.name for p in root.iterdir()) == ["VOCdevkit", "synthetic-voc.json"]


def test_voc_labels_are_palette_pngs_matching_images(voc):
    _, base = voc
    reference = voc_colormap_reference()
    assert reference[1] == (128, 0, 0) and reference[15] == (192, 128, 128) and reference[255] == (224, 224, 192)
    seen = set()
    sizes = set()
    for png_path in sorted((base / "SegmentationClassAug").iterdir()):
        label_img = Image.open(png_path)
        assert label_img.mode == "P"
        palette = label_img.getpalette()
        assert [tuple(palette[3 * i:3 * i + 3]) for i in range(256)] == reference
        label = np.array(label_img)
        assert label.dtype == np.uint8
        values = set(np.unique(label).tolist())
        assert values <= set(range(21)) | {255}
        assert 255 in values and 0 in values
        seen |= values
        jpeg = Image.open(base / "JPEGImages" / f"{png_path.stem}.jpg")
        assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
        assert jpeg.size == label_img.size
        w, h = jpeg.size
        assert 40 <= w <= 64 and 40 <= h <= 64
        sizes.add((h, w))
    assert seen == set(range(21)) | {255}  # every class appears
    assert len(sizes) > 5  # sizes vary


def test_voc_objects_are_outlined_with_255(voc):
    """Like VOC's void outlines: two 4-adjacent labelled (non-255) pixels always carry the same class."""
    _, base = voc
    for png_path in sorted((base / "SegmentationClassAug").iterdir())[:10]:
        label = np.array(Image.open(png_path)).astype(int)
        for a, b in ((label[1:, :], label[:-1, :]), (label[:, 1:], label[:, :-1])):
            both = (a != 255) & (b != 255)
            assert np.all(a[both] == b[both])


def test_voc_same_seed_same_bytes_other_seed_differs(voc, tmp_path):
    _, base = voc
    again = syn.make_voc(tmp_path / "a", num_train=VOC_TRAIN, num_val=VOC_VAL, size_range=(40, 64), seed=3)
    other = syn.make_voc(tmp_path / "b", num_train=VOC_TRAIN, num_val=VOC_VAL, size_range=(40, 64), seed=4)
    for sub in ("SegmentationClassAug", "JPEGImages", "ImageSets/Segmentation"):
        for path in (base / sub).iterdir():
            assert (again / sub / path.name).read_bytes() == path.read_bytes()
    first = sorted((base / "SegmentationClassAug").iterdir())[0]
    other_first = sorted((other / "SegmentationClassAug").iterdir())[0]
    assert np.array(Image.open(first)).tobytes() != np.array(Image.open(other_first)).tobytes()


def test_voc_fixed_size_and_class_balance(tmp_path):
    base = syn.make_voc(tmp_path, num_train=20, num_val=1, size=(33, 50), seed=0)
    ids = read_lines(base / "ImageSets" / "Segmentation" / "trainaug.txt")
    for image_id in ids:
        assert Image.open(base / "JPEGImages" / f"{image_id}.jpg").size == (50, 33)
    present = set()
    for image_id in ids:
        present |= set(np.unique(np.array(Image.open(base / "SegmentationClassAug" / f"{image_id}.png"))).tolist())
    assert set(range(1, 21)) <= present  # any 20 consecutive images hold all 20 classes


def test_rerun_is_noop_and_other_args_are_refused(voc, tmp_path):
    root, base = voc
    marker = root / "synthetic-voc.json"
    before = marker.stat().st_mtime_ns, (base / "ImageSets/Segmentation/val.txt").stat().st_mtime_ns
    assert syn.make_voc(root, num_train=VOC_TRAIN, num_val=VOC_VAL, size_range=(40, 64), seed=3) == base
    after = marker.stat().st_mtime_ns, (base / "ImageSets/Segmentation/val.txt").stat().st_mtime_ns
    assert before == after
    with pytest.raises(UserError, match="synthetic-voc.json"):
        syn.make_voc(root, num_train=VOC_TRAIN + 1, num_val=VOC_VAL, size_range=(40, 64), seed=3)
    (tmp_path / "VOCdevkit").mkdir()  # e.g. a real or half-written dataset without the marker
    with pytest.raises(UserError, match="VOCdevkit"):
        syn.make_voc(tmp_path, num_train=2, num_val=1)


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = []
    real_job = syn_voc._voc_job

    def dying_job(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_job(job)

    monkeypatch.setattr(syn_voc, "_voc_job", dying_job)
    with pytest.raises(KeyboardInterrupt):
        syn.make_voc(tmp_path, num_train=5, num_val=2)
    assert list(tmp_path.iterdir()) == []  # no dataset, no marker, no staging folder
    monkeypatch.setattr(syn_voc, "_voc_job", real_job)
    syn.make_voc(tmp_path, num_train=5, num_val=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VOCdevkit", "synthetic-voc.json"]


# ---------------------------------------------------------------- Cityscapes
def test_cityscapes_loads_with_torchvision(city):
    from torchvision.datasets import Cityscapes

    real_ids = {c.id for c in Cityscapes.classes}
    colours = {c.id: c.color for c in Cityscapes.classes}
    train_ids = {c.id for c in Cityscapes.classes if 0 <= c.train_id < 255}
    assert len(train_ids) == 19
    seen = set()
    for split, count in (("train", CITY_TRAIN), ("val", CITY_VAL)):
        ds = Cityscapes(str(city), split=split, mode="fine", target_type="semantic")
        assert len(ds) == count
        for index in range(len(ds)):
            image, target = ds[index]
            assert image.mode == "RGB" and image.size == (96, 48)
            assert target.mode == "L" and target.size == (96, 48)
            values = set(np.unique(np.array(target)).tolist())
            assert values <= real_ids
            seen |= values
    assert train_ids <= seen  # all 19 evaluated classes occur
    assert seen - train_ids  # and some ignored ids (void, ego vehicle, static, ...)

    ds = Cityscapes(str(city), split="val", mode="fine", target_type=["semantic", "instance", "color", "polygon"])
    _, (semantic, instance, colour, polygons) = ds[0]
    semantic, instance, colour = np.array(semantic), np.array(instance), np.array(colour)
    assert colour.shape == (48, 96, 4) and np.all(colour[..., 3] == 255)
    for label_id in np.unique(semantic):
        assert {tuple(c) for c in colour[semantic == label_id][:, :3]} == {colours[int(label_id)]}
    things = semantic >= 24
    assert np.all(instance[things] // 1000 == semantic[things])
    assert np.all(instance[~things] == semantic[~things])
    assert polygons["imgHeight"] == 48 and polygons["imgWidth"] == 96
    names = {c.name for c in Cityscapes.classes}
    assert polygons["objects"] and all(o["label"] in names and len(o["polygon"]) >= 3 for o in polygons["objects"])


def test_cityscapes_file_names(city):
    for split, cities in (("train", syn.CITY_TRAIN_CITIES), ("val", syn.CITY_VAL_CITIES)):
        images = sorted((city / "leftImg8bit" / split).rglob("*.png"))
        assert {p.parent.name for p in images} <= set(cities)
        for p in images:
            m = re.fullmatch(rf"({p.parent.name})_(\d{{6}})_(\d{{6}})_leftImg8bit\.png", p.name)
            assert m, p.name
            stem = p.name[: -len("_leftImg8bit.png")]
            gt = city / "gtFine" / split / p.parent.name
            for suffix in ("labelIds.png", "color.png", "instanceIds.png", "polygons.json"):
                assert (gt / f"{stem}_gtFine_{suffix}").is_file()
        assert len(list((city / "gtFine" / split).rglob("*"))) == 4 * len(images) + len({p.parent for p in images})
    assert json.loads((city / "synthetic-cityscapes.json").read_text())["kind"] == "cityscapes"


# ---------------------------------------------------------------- CIFAR-10
def load_pickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def test_cifar_pickles_match_the_real_format(tmp_path):
    out = syn.make_cifar10(tmp_path, num_train_per_class=7, num_test_per_class=3, seed=0)
    assert out == tmp_path / "cifar-10-batches-py"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"])
    meta = load_pickle(out / "batches.meta")
    assert set(meta) == {b"num_cases_per_batch", b"label_names", b"num_vis"}
    assert meta[b"label_names"] == [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                                    b"dog", b"frog", b"horse", b"ship", b"truck"]
    assert meta[b"num_vis"] == 3072
    train_labels = []
    for i in range(1, 6):
        batch = load_pickle(out / f"data_batch_{i}")
        assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
        assert batch[b"batch_label"] == f"training batch {i} of 5".encode()
        data, labels = batch[b"data"], batch[b"labels"]
        assert isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape == (len(labels), 3072)
        assert all(type(x) is int for x in labels)
        assert all(isinstance(n, bytes) and n.endswith(b".png") for n in batch[b"filenames"])
        assert len(batch[b"filenames"]) == len(labels) == 14
        train_labels += labels
    assert meta[b"num_cases_per_batch"] == 14
    assert np.bincount(train_labels, minlength=10).tolist() == [7] * 10
    test = load_pickle(out / "test_batch")
    assert test[b"batch_label"] == b"testing batch 1 of 1"
    assert test[b"data"].shape == (30, 3072) and np.bincount(test[b"labels"]).tolist() == [3] * 10


def test_cifar_rows_are_channel_planes(tmp_path):
    """Rows are R(1024) G(1024) B(1024), each row-major 32x32: neighbouring pixels are then similar."""
    out = syn.make_cifar10(tmp_path, num_train_per_class=2, num_test_per_class=1)
    data = load_pickle(out / "test_batch")[b"data"].astype(float)
    planes = data.reshape(-1, 3, 32, 32)
    interleaved = data.reshape(-1, 32, 32, 3)  # the wrong reading
    step_planes = np.abs(np.diff(planes, axis=3)).mean()
    step_interleaved = np.abs(np.diff(interleaved, axis=2)).mean()
    assert step_planes < 0.7 * step_interleaved


def test_workers_give_identical_output(tmp_path):
    one = syn.make_cifar10(tmp_path / "one", num_train_per_class=7, num_test_per_class=1, seed=5)
    two = syn.make_cifar10(tmp_path / "two", num_train_per_class=7, num_test_per_class=1, seed=5, workers=2)
    for name in ("data_batch_1", "data_batch_5", "test_batch"):
        assert (one / name).read_bytes() == (two / name).read_bytes()


def test_colour_does_not_give_the_class_but_texture_is_visible(tmp_path):
    """Nearest-centroid classifiers on colour sit near chance (0.1 for 10 classes); a texture
    statistic (mean absolute pixel step) separates solid from striped classes."""
    out = syn.make_cifar10(tmp_path, num_train_per_class=30, num_test_per_class=10, seed=0)
    train = [load_pickle(out / f"data_batch_{i}") for i in range(1, 6)]
    x_train = np.concatenate([b[b"data"] for b in train]).astype(float)
    y_train = np.concatenate([b[b"labels"] for b in train])
    test = load_pickle(out / "test_batch")
    x_test, y_test = test[b"data"].astype(float), np.array(test[b"labels"])

    def nearest_centroid(f_train, f_test, y_tr, y_te, classes):
        centroids = np.stack([f_train[y_tr == k].mean(0) for k in range(classes)])
        pred = ((f_test[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        return (pred == y_te).mean()

    mean_rgb = lambda x: x.reshape(-1, 3, 1024).mean(2)  # noqa: E731
    assert nearest_centroid(mean_rgb(x_train), mean_rgb(x_test), y_train, y_test, 10) < 0.3
    assert nearest_centroid(x_train, x_test, y_train, y_test, 10) < 0.3  # raw pixels

    def pixel_step(x):
        grey = x.reshape(-1, 3, 32, 32).mean(1)
        return np.stack([np.abs(np.diff(grey, axis=1)).mean((1, 2)), np.abs(np.diff(grey, axis=2)).mean((1, 2))], 1)

    striped_train, striped_test = (y_train >= 5).astype(int), (y_test >= 5).astype(int)  # classes 5-9 striped
    assert [syn.CIFAR_STYLES[k][1] for k in range(10)] == ["solid"] * 5 + ["stripes"] * 5
    assert nearest_centroid(pixel_step(x_train), pixel_step(x_test), striped_train, striped_test, 2) > 0.8


# ---------------------------------------------------------------- CLI
def test_cli(tmp_path, capsys):
    assert run_cli(syn.main, ["--kind", "cifar10", "--root", str(tmp_path / "c"),
                              "--num-train", "1", "--num-val", "1"]) == 0
    assert (tmp_path / "c" / "cifar-10-batches-py" / "test_batch").is_file()
    assert run_cli(syn.main, ["--kind", "cityscapes", "--root", str(tmp_path / "s"),
                              "--num-train", "2", "--num-val", "1", "--image-size", "20"]) == 0
    image = next((tmp_path / "s" / "leftImg8bit" / "train").rglob("*.png"))
    assert Image.open(image).size == (40, 20)
    assert run_cli(syn.main, ["--kind", "voc", "--root", str(tmp_path / "v"), "--num-train", "2",
                              "--num-val", "1", "--size", "30", "20"]) == 0
    capsys.readouterr()
    assert run_cli(syn.main, ["--kind", "voc", "--root", str(tmp_path / "x"), "--num-train", "0"]) == 2
    assert run_cli(syn.main, ["--kind", "cifar10", "--root", str(tmp_path / "y"), "--size", "32", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 2 and "num_train=0" in err


def test_voc_subset_of_classes(tmp_path):
    root = syn.make_voc(tmp_path, num_train=12, num_val=3, size=(40, 40), classes=[1, 6, 11])
    values = set()
    for png in (root / "SegmentationClassAug").glob("*.png"):
        values |= set(np.unique(np.array(Image.open(png))).tolist())
    assert values <= {0, 1, 6, 11, 255} and {1, 6, 11} <= values
    with pytest.raises(UserError):
        syn.make_voc(tmp_path / "bad", num_train=2, num_val=1, classes=[21])


# ---------------------------------------------------------------- byte-identical output
# sha256 of tiny datasets of every kind, recorded from the single-module generator (data/synthetic.py)
# before it was split into the data/synthetic/ package (issue 13): the generator's output must not change. The
# encoders' bytes depend on the libraries, so another numpy / Pillow / zlib / libjpeg skips.
RECORDED_WITH = {"numpy": "2.4.6", "pillow": "13.0.0", "zlib": "1.2.13", "jpg": "6.2"}
RECORDED_DIGESTS = {
    "voc": "6b7dc4a603039de7b3fadc112a6829ab664bf21fceb2b55c1c736491eb496217",
    "voc3": "2f0ec017d8d04c9f89c7bacaf9447b2a6a864e99f8720e53ca36b85d3fa3c364",
    "city": "7ca68b2dee123b47eb1fa1315a7e4431ffa31f94282ee6e8e6ffeeb94af896ba",
    "cifar": "3e26ffe1f45ee92b1a787f73ee575fee64bd4257fcf8fc3b37e24a03b58f8ddf",
}


def tree_digest(root) -> str:
    """sha256 over (relative path, sha256 of the bytes) of every file under ``root``, sorted."""
    import hashlib
    from pathlib import Path
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def test_generated_bytes_are_the_recorded_ones(tmp_path):
    import PIL
    from PIL import features
    here = {"numpy": np.__version__, "pillow": PIL.__version__, "zlib": features.version("zlib"),
            "jpg": features.version("jpg")}
    if here != RECORDED_WITH:
        pytest.skip(f"encoded bytes depend on the libraries: recorded with {RECORDED_WITH}, here {here}")
    syn.make_voc(tmp_path / "voc", num_train=4, num_val=2, size_range=(20, 36), seed=5)
    syn.make_voc(tmp_path / "voc3", num_train=3, num_val=1, size=(24, 32), seed=1, classes=[2, 7, 12])
    syn.make_cityscapes(tmp_path / "city", num_train=2, num_val=1, size=(24, 48), seed=2)
    syn.make_cifar10(tmp_path / "cifar", num_train_per_class=1, num_test_per_class=1, seed=4)
    assert {kind: tree_digest(tmp_path / kind) for kind in RECORDED_DIGESTS} == RECORDED_DIGESTS
