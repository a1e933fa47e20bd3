"""Segmentation datasets (VOC / Cityscapes layouts built here), pseudo-label files and input checks."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmentation.datasets import CityscapesSegmentation, VOCSegmentation, collate
from segmentation.transforms import test_transforms, train_transforms
from utils.errors import UserError

VOC_IDS = ["2007_000001", "2007_000002", "2008_000003"]
VOC_SIZES = [(40, 50), (37, 44), (45, 30)]
CITY_IDS = ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019", "bremen/bremen_000000_000019"]
CITY_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                       24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


# ----------------------------------------------------------------------------- fixture writers
def save_palette_png(path: Path, labels: np.ndarray) -> None:
    h, w = labels.shape
    img = Image.frombytes("P", (w, h), labels.astype(np.uint8).tobytes())
    img.putpalette([(i * 37) % 256 for i in range(768)])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def make_voc(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    data = {}
    (root / "JPEGImages").mkdir(parents=True)
    for sample_id, (h, w) in zip(VOC_IDS, VOC_SIZES):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "JPEGImages" / f"{sample_id}.jpg", quality=95)
        lab = rng.integers(0, 21, (h, w)).astype(np.uint8)
        lab[:3] = 255
        save_palette_png(root / "SegmentationClassAug" / f"{sample_id}.png", lab)
        data[sample_id] = (np.array(Image.open(root / "JPEGImages" / f"{sample_id}.jpg").convert("RGB")), lab)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in VOC_IDS))
    return data


def make_city(root: Path, split: str = "train", h: int = 32, w: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    data = {}
    for entry in CITY_IDS:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ids = rng.integers(0, 34, (h, w)).astype(np.uint8)
        ipath = root / "leftImg8bit" / split / f"{entry}_leftImg8bit.png"
        lpath = root / "gtFine" / split / f"{entry}_gtFine_labelIds.png"
        ipath.parent.mkdir(parents=True, exist_ok=True)
        lpath.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(ipath)
        Image.fromarray(ids).save(lpath)  # mode "L", as the official labelIds files
        data[entry] = (img, ids)
    (root / "data_lists").mkdir()
    (root / "data_lists" / f"{split}.txt").write_text("".join(f"{e}\n" for e in CITY_IDS))
    return data


def write_pseudo(pseudo_dir: Path, sample_id: str, h: int, w: int, seed: int = 0, classes: int = 21) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, (h, w)).astype(np.float32)
    labels[rng.random((h, w)) < 0.3] = 255
    conf = rng.random((h, w)).astype(np.float32)
    arr = np.stack([labels, conf], axis=-1)
    path = pseudo_dir / f"{sample_id}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return arr


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOC2012"
    return root, make_voc(root)


@pytest.fixture
def city(tmp_path):
    root = tmp_path / "cityscapes"
    return root, make_city(root)


def raises_naming(path, fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert "\n" not in msg and ";" in msg
    return msg


# ----------------------------------------------------------------------------- VOC
def test_voc_raw_items(voc):
    root, data = voc
    ds = VOCSegmentation(root, "train")
    assert len(ds) == 3 and ds.ids == VOC_IDS
    for i, sample_id in enumerate(VOC_IDS):
        image, label = ds[i]
        img, lab = data[sample_id]
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3,) + img.shape[:2]
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), img)
        assert label.dtype == torch.int64
        np.testing.assert_array_equal(label.numpy(), lab.astype(np.int64))
        assert type(image) is torch.Tensor and type(label) is torch.Tensor


def test_voc_split_forms(voc):
    root, _ = voc
    by_path = VOCSegmentation(root, root / "ImageSets" / "Segmentation" / "train.txt")
    by_str_path = VOCSegmentation(root, str(root / "ImageSets" / "Segmentation" / "train.txt"))
    by_ids = VOCSegmentation(root, VOC_IDS[1:])
    assert by_path.ids == by_str_path.ids == VOC_IDS and by_ids.ids == VOC_IDS[1:]


def test_voc_test_transform_and_labeling_collate(voc):
    root, data = voc
    tf = test_transforms("voc", norm="coco", size=(97, 97))
    ds = VOCSegmentation(root, "train", tf)
    image, label = ds[0]
    assert image.shape == (3, 97, 97) and label.shape == (97, 97)
    img, lab = data[VOC_IDS[0]]
    np.testing.assert_array_equal(label[:40, :50].numpy(), lab)
    assert torch.all(label[40:] == 255) and torch.all(label[:, 50:] == 255)
    # pixel (0, 0): BGR minus the BGR mean
    expected = img[0, 0, ::-1].astype(np.float64) - np.array([104.008, 116.669, 122.675])
    np.testing.assert_allclose(image[:, 0, 0].numpy(), expected, atol=1e-4)

    lab_ds = VOCSegmentation(root, "train", tf, labeling=True)
    items = [lab_ds[i] for i in range(3)]
    assert items[2][2] == VOC_IDS[2] and items[2][3] == VOC_SIZES[2]
    images, labels, ids, sizes = collate(items)
    assert images.shape == (3, 3, 97, 97) and labels.shape == (3, 97, 97)
    assert ids == VOC_IDS and sizes == VOC_SIZES

    nolab = VOCSegmentation(root, "train", tf, labeling=True, load_labels=False)
    images, labels, ids, sizes = collate([nolab[i] for i in range(3)])
    assert labels is None and images.shape == (3, 3, 97, 97)


def test_voc_train_batch_and_pseudo_items(voc, tmp_path):
    root, _ = voc
    tf = train_transforms("voc", crop=(33, 33), norm="imagenet")
    gt = VOCSegmentation(root, "train", tf)
    pseudo_dir = tmp_path / "pseudo"
    for sample_id, (h, w) in zip(VOC_IDS, VOC_SIZES):
        write_pseudo(pseudo_dir, sample_id, h, w)
    ps = VOCSegmentation(root, "train", tf, pseudo_dir=pseudo_dir)
    random.seed(0)
    gt_images, gt_labels = collate([gt[i] for i in range(3)])
    ps_images, ps_labels, ps_confidences = collate([ps[i] for i in range(3)])
    assert gt_images.shape == ps_images.shape == (3, 3, 33, 33)
    assert gt_labels.shape == ps_labels.shape == (3, 33, 33) and gt_labels.dtype == ps_labels.dtype == torch.int64
    assert ps_confidences.shape == (3, 33, 33) and ps_confidences.dtype == torch.float32
    # the online ablation's unlabelled images: no label file is read, same augmentation draws
    nolab = VOCSegmentation(root, "train", tf, load_labels=False)
    random.seed(0)
    images, labels = collate([nolab[i] for i in range(3)])
    assert labels is None and torch.equal(images, gt_images)


def test_voc_pseudo_round_trip(voc, tmp_path):
    root, _ = voc
    pseudo_dir = tmp_path / "pseudo"
    arrays = {i: write_pseudo(pseudo_dir, i, h, w, seed=k) for k, (i, (h, w)) in enumerate(zip(VOC_IDS, VOC_SIZES))}
    ds = VOCSegmentation(root, "train", pseudo_dir=pseudo_dir)
    for k, sample_id in enumerate(VOC_IDS):
        _, labels, confidences = ds[k]
        assert labels.dtype == torch.int64 and confidences.dtype == torch.float32
        assert labels.shape == confidences.shape == VOC_SIZES[k]
        np.testing.assert_array_equal(labels.numpy(), arrays[sample_id][..., 0])
        np.testing.assert_array_equal(confidences.numpy(), arrays[sample_id][..., 1])
    # via the project's atomic writer, as the labeller writes them
    from utils.io import save_npy_atomic
    arr = arrays[VOC_IDS[0]].copy()
    arr[..., 1] = 1.0
    save_npy_atomic(pseudo_dir / f"{VOC_IDS[0]}.npy", arr)
    np.testing.assert_array_equal(ds[0][2].numpy(), arr[..., 1])


# ----------------------------------------------------------------------------- Cityscapes
def test_city_gt_mapped_to_train_ids(city):
    root, data = city
    ds = CityscapesSegmentation(root, "train", "train", test_transforms("city", norm="coco", size=(32, 64)))
    assert ds.ids == CITY_IDS
    for k, entry in enumerate(CITY_IDS):
        image, label = ds[k]
        _, ids = data[entry]
        expected = np.vectorize(lambda v: CITY_LABEL_TO_TRAIN.get(int(v), 255))(ids)
        np.testing.assert_array_equal(label.numpy(), expected)
        assert image.shape == (3, 32, 64)
    raw = CityscapesSegmentation(root, "train", CITY_IDS[:1])
    np.testing.assert_array_equal(raw[0][1].numpy(), data[CITY_IDS[0]][1])


def test_city_resize_and_pseudo(city, tmp_path):
    root, _ = city
    pseudo_dir = tmp_path / "gtFinePseudo"
    arrays = [write_pseudo(pseudo_dir, e, 16, 32, seed=k, classes=19) for k, e in enumerate(CITY_IDS)]
    ps = CityscapesSegmentation(root, "train", "train", pseudo_dir=pseudo_dir, size=(16, 32))
    np.testing.assert_array_equal(torch.stack([ps[1][1].float(), ps[1][2]]).numpy(), arrays[1].transpose(2, 0, 1))
    tf = train_transforms("city", crop=(9, 17), norm="coco", resize=(16, 32))
    ps_tf = CityscapesSegmentation(root, "train", "train", tf, pseudo_dir=pseudo_dir, size=(16, 32))
    gt_tf = CityscapesSegmentation(root, "train", "train", tf, size=(16, 32))
    random.seed(1)
    images, ps_labels, confidences = collate([ps_tf[k] for k in range(3)])
    assert images.shape == (3, 3, 9, 17) and ps_labels.shape == confidences.shape == (3, 9, 17)
    _, labels = collate([gt_tf[k] for k in range(3)])
    assert labels.shape == (3, 9, 17) and int(labels[labels != 255].max()) < 19
    lab_ds = CityscapesSegmentation(root, "train", "train", test_transforms("city", "coco", (16, 32)), labeling=True,
                                    size=(16, 32))
    image, label, entry, hw = lab_ds[2]
    assert entry == CITY_IDS[2] and hw == (32, 64) and image.shape == (3, 16, 32) and label.shape == (16, 32)
    # a pseudo map at the original (not the labeller's) size is rejected
    write_pseudo(pseudo_dir, CITY_IDS[0], 32, 64)
    raises_naming(pseudo_dir / f"{CITY_IDS[0]}.npy", ps.__getitem__, 0)


# ----------------------------------------------------------------------------- bad input
def test_missing_folders_and_split(tmp_path, voc):
    root, _ = voc
    raises_naming(tmp_path / "nope", VOCSegmentation, tmp_path / "nope", "train")
    raises_naming(root / "ImageSets" / "Segmentation" / "20_labeled_0.txt", VOCSegmentation, root, "20_labeled_0")
    raises_naming(tmp_path / "missing.txt", VOCSegmentation, root, tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    raises_naming(empty, VOCSegmentation, root, empty)
    raises_naming(tmp_path / "no_pseudo", VOCSegmentation, root, "train", pseudo_dir=tmp_path / "no_pseudo")
    (root / "JPEGImages").rename(root / "images")
    raises_naming(root / "JPEGImages", VOCSegmentation, root, "train")
    (root / "images").rename(root / "JPEGImages")
    (root / "SegmentationClassAug").rename(root / "labels")
    raises_naming(root / "SegmentationClassAug", VOCSegmentation, root, "train")
    VOCSegmentation(root, "train", labeling=True, load_labels=False)  # labels not needed: fine
    raises_naming(tmp_path / "no_city", CityscapesSegmentation, tmp_path / "no_city", "train", "train")


def test_missing_image_and_label_files(voc):
    root, _ = voc
    (root / "JPEGImages" / f"{VOC_IDS[1]}.jpg").unlink()
    ds = VOCSegmentation(root, "train")
    ds[0]
    raises_naming(root / "JPEGImages" / f"{VOC_IDS[1]}.jpg", ds.__getitem__, 1)
    (root / "SegmentationClassAug" / f"{VOC_IDS[2]}.png").unlink()
    raises_naming(root / "SegmentationClassAug" / f"{VOC_IDS[2]}.png", ds.__getitem__, 2)


def test_corrupt_images(voc):
    root, _ = voc
    ds = VOCSegmentation(root, "train")
    garbage = root / "JPEGImages" / f"{VOC_IDS[0]}.jpg"
    garbage.write_bytes(b"this is not a jpeg at all" * 10)
    msg = raises_naming(garbage, ds.__getitem__, 0)
    assert "decode" in msg
    truncated = root / "JPEGImages" / f"{VOC_IDS[1]}.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    raises_naming(truncated, ds.__getitem__, 1)
    bad_label = root / "SegmentationClassAug" / f"{VOC_IDS[2]}.png"
    bad_label.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    raises_naming(bad_label, ds.__getitem__, 2)


def test_label_checks(voc, city):
    root, data = voc
    ds = VOCSegmentation(root, "train")
    path = root / "SegmentationClassAug" / f"{VOC_IDS[0]}.png"
    lab = data[VOC_IDS[0]][1].copy()
    lab[10, 10] = 21
    save_palette_png(path, lab)
    msg = raises_naming(path, ds.__getitem__, 0)
    assert "21" in msg
    lab[10, 10] = 255  # ignore is allowed
    save_palette_png(path, lab)
    ds[0]
    Image.fromarray(np.zeros(lab.shape + (3,), np.uint8)).save(path)  # an RGB colour label
    assert "mode RGB" in raises_naming(path, ds.__getitem__, 0)
    save_palette_png(path, lab[:-1])  # one row short
    assert "differs" in raises_naming(path, ds.__getitem__, 0)

    croot, cdata = city
    cds = CityscapesSegmentation(croot, "train", "train")
    cpath = croot / "gtFine" / "train" / f"{CITY_IDS[1]}_gtFine_labelIds.png"
    ids = cdata[CITY_IDS[1]][1].copy()
    ids[0, 0] = 33
    Image.fromarray(ids).save(cpath)
    cds[1]
    ids[0, 0] = 200
    Image.fromarray(ids).save(cpath)
    assert "200" in raises_naming(cpath, cds.__getitem__, 1)
    ids[0, 0] = 34
    Image.fromarray(ids).save(cpath)
    raises_naming(cpath, cds.__getitem__, 1)
    (croot / "leftImg8bit" / "train" / f"{CITY_IDS[2]}_leftImg8bit.png").unlink()
    raises_naming(croot / "leftImg8bit" / "train" / f"{CITY_IDS[2]}_leftImg8bit.png", cds.__getitem__, 2)


@pytest.mark.parametrize("case", ["missing", "float64", "hw_only", "three_channels", "wrong_size",
                                  "bad_class", "fractional", "conf_above_1", "conf_nan", "garbage"])
def test_bad_pseudo_files(voc, tmp_path, case):
    root, _ = voc
    pseudo_dir = tmp_path / "pseudo"
    h, w = VOC_SIZES[0]
    arr = write_pseudo(pseudo_dir, VOC_IDS[0], h, w)
    path = pseudo_dir / f"{VOC_IDS[0]}.npy"
    if case == "missing":
        path.unlink()
    elif case == "float64":
        np.save(path, arr.astype(np.float64))
    elif case == "hw_only":
        np.save(path, arr[..., 0].copy())
    elif case == "three_channels":
        np.save(path, np.concatenate([arr, arr[..., :1]], axis=-1))
    elif case == "wrong_size":
        np.save(path, arr[:-1].copy())
    elif case == "bad_class":
        arr[0, 0, 0] = 21
        np.save(path, arr)
    elif case == "fractional":
        arr[0, 0, 0] = 2.5
        np.save(path, arr)
    elif case == "conf_above_1":
        arr[0, 0, 1] = 1.5
        np.save(path, arr)
    elif case == "conf_nan":
        arr[0, 0, 1] = np.nan
        np.save(path, arr)
    elif case == "garbage":
        path.write_bytes(b"\x93NUMPY garbage")
    ds = VOCSegmentation(root, "train", pseudo_dir=pseudo_dir)
    raises_naming(path, ds.__getitem__, 0)


def test_collate_rejects_mixed_sizes():
    with pytest.raises(UserError):
        collate([(torch.zeros(3, 4, 4), torch.zeros(4, 4)), (torch.zeros(3, 5, 4), torch.zeros(5, 4))])
