"""Joint segmentation transforms (docs/method.md §6.1), checked against hand values and plain-numpy references."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from segmentation import transforms as T
from segmentation.run_config import default_test_size

COCO_MEAN_BGR = np.array([104.008, 116.669, 122.675])
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


# ----------------------------------------------------------------------------- helpers
def coord_sample(h: int, w: int, pseudo: bool = False):
    """Image whose pixels encode their coordinates (row+1, col+1, 7), and a target that encodes them
    too, so that alignment after a geometric transform can be read off the values (0 / 255 = padding)."""
    rows, cols = np.mgrid[0:h, 0:w]
    img = np.stack([rows + 1, cols + 1, np.full_like(rows, 7)]).astype(np.float32)
    code = (rows + 1) * 1000 + (cols + 1)
    if pseudo:
        target = np.stack([code, code + 0.5]).astype(np.float32)  # never 255 in either channel
    else:
        target = code.astype(np.int64)
    return tv_tensors.Image(torch.from_numpy(img)), tv_tensors.Mask(torch.from_numpy(target))


def np_(x: torch.Tensor) -> np.ndarray:
    return x.as_subclass(torch.Tensor).numpy()


def bilinear_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Plain-loop bilinear, align_corners=False, no antialias (PyTorch's convention)."""
    c, h, w = img.shape
    out = np.zeros((c, out_h, out_w), dtype=np.float64)

    def src_index(dst: int, in_size: int, out_size: int) -> tuple[int, int, float]:
        s = (dst + 0.5) * in_size / out_size - 0.5
        s = max(s, 0.0)
        i0 = min(int(math.floor(s)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        return i0, i1, s - i0

    for y in range(out_h):
        y0, y1, ly = src_index(y, h, out_h)
        for x in range(out_w):
            x0, x1, lx = src_index(x, w, out_w)
            out[:, y, x] = ((1 - ly) * ((1 - lx) * img[:, y0, x0] + lx * img[:, y0, x1])
                            + ly * ((1 - lx) * img[:, y1, x0] + lx * img[:, y1, x1]))
    return out


def nearest_reference(m: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PyTorch 'nearest' (legacy): src = floor(dst · in/out), computed in float32."""
    h, w = m.shape[-2:]
    ys = np.minimum(np.floor(np.arange(out_h, dtype=np.float32) * np.float32(h / out_h)).astype(int), h - 1)
    xs = np.minimum(np.floor(np.arange(out_w, dtype=np.float32) * np.float32(w / out_w)).astype(int), w - 1)
    return m[..., ys[:, None], xs[None, :]]


# ----------------------------------------------------------------------------- City ids
CITYSCAPES_TRAIN_CLASSES = [  # (name, labelId, trainId) from the Cityscapes labels table
    ("road", 7, 0), ("sidewalk", 8, 1), ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4),
    ("pole", 17, 5), ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8),
    ("terrain", 22, 9), ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13),
    ("truck", 27, 14), ("bus", 28, 15), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
]


def test_city_lut_every_id():
    expected = {label_id: train_id for _, label_id, train_id in CITYSCAPES_TRAIN_CLASSES}
    lut = T.city_label_lut()
    assert lut.shape == (256,) and lut.dtype == torch.int64
    for label_id in range(256):
        assert lut[label_id].item() == expected.get(label_id, 255), label_id
    ids = torch.arange(256).view(16, 16)
    mapped = T.map_city_label_ids(ids)
    assert [mapped.flatten()[i].item() for i in range(256)] == [expected.get(i, 255) for i in range(256)]
    # the transform: integer masks mapped, float pseudo maps untouched
    out = T.LabelIdToTrainId()(tv_tensors.Mask(ids.to(torch.uint8)))
    assert out.dtype == torch.int64 and torch.equal(out.as_subclass(torch.Tensor), mapped)
    pseudo = tv_tensors.Mask(torch.full((2, 3, 3), 7.0))
    assert torch.equal(T.LabelIdToTrainId()(pseudo), pseudo)


# ----------------------------------------------------------------------------- Normalize
def test_normalize_by_hand():
    img = tv_tensors.Image(torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1).expand(3, 2, 2).clone())
    coco = np_(T.Normalize("coco")(img))[:, 0, 0]
    # RGB -> BGR: channel 0 is blue (30), channel 2 is red (10)
    np.testing.assert_allclose(coco, [30 - 104.008, 20 - 116.669, 10 - 122.675], atol=1e-4)
    imnet = np_(T.Normalize("imagenet")(img))[:, 0, 0]
    np.testing.assert_allclose(imnet, [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224,
                                       (30 / 255 - 0.406) / 0.225], atol=1e-5)
    mask = tv_tensors.Mask(torch.ones(2, 2, dtype=torch.int64))
    _, m = T.Normalize("coco")(img, mask)
    assert torch.equal(m, mask)
    with pytest.raises(ValueError):
        T.Normalize("caffe")


# ----------------------------------------------------------------------------- RandomScale / Resize
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_scale_sizes_and_values(seed):
    h, w = 11, 14
    g = torch.Generator().manual_seed(seed)
    img = tv_tensors.Image(torch.rand(3, h, w, generator=g) * 255)
    lab = tv_tensors.Mask(torch.randint(0, 21, (h, w), generator=g))
    pseudo = tv_tensors.Mask(torch.rand(2, h, w, generator=g))
    random.seed(seed)
    s = random.uniform(0.5, 1.5)
    random.seed(seed)
    out_img, out_lab = T.RandomScale(0.5, 1.5)(img, lab)
    random.seed(seed)
    _, out_pseudo = T.RandomScale(0.5, 1.5)(img, pseudo)
    oh, ow = int(s * h), int(s * w)
    assert out_img.shape == (3, oh, ow) and out_lab.shape == (oh, ow) and out_pseudo.shape == (2, oh, ow)
    assert out_lab.dtype == torch.int64 and out_pseudo.dtype == torch.float32
    np.testing.assert_allclose(np_(out_img), bilinear_reference(np_(img).astype(np.float64), oh, ow), atol=1e-3)
    np.testing.assert_array_equal(np_(out_lab), nearest_reference(np_(lab), oh, ow))
    np.testing.assert_array_equal(np_(out_pseudo), nearest_reference(np_(pseudo), oh, ow))


def test_random_scale_uses_python_random():
    img, lab = coord_sample(20, 30)
    sizes = set()
    for seed in range(6):
        random.seed(seed)
        a = T.RandomScale()(img, lab)[0].shape
        random.seed(seed)
        b = T.RandomScale()(img, lab)[0].shape
        assert a == b
        sizes.add(a)
    assert len(sizes) > 1


def test_resize_city():
    g = torch.Generator().manual_seed(5)
    img = tv_tensors.Image(torch.rand(3, 16, 32, generator=g) * 255)
    lab = tv_tensors.Mask(torch.randint(0, 34, (16, 32), generator=g))
    out_img, out_lab = T.Resize(8, 16)(img, lab)
    np.testing.assert_allclose(np_(out_img), bilinear_reference(np_(img).astype(np.float64), 8, 16), atol=1e-3)
    # a 2x bilinear downscale without antialias is the mean of each 2x2 block
    blocks = np_(img).reshape(3, 8, 2, 16, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(np_(out_img), blocks, atol=1e-3)
    np.testing.assert_array_equal(np_(out_lab), np_(lab)[::2, ::2])


# ----------------------------------------------------------------------------- PadCrop
def padded_crop_reference(arr: np.ndarray, crop: tuple[int, int], fill: float, seed: int) -> np.ndarray:
    """Plain re-implementation: pad bottom/right, then crop at offsets drawn from random.seed(seed)."""
    h, w = arr.shape[-2:]
    ph, pw = max(crop[0], h), max(crop[1], w)
    padded = np.full(arr.shape[:-2] + (ph, pw), fill, dtype=arr.dtype)
    padded[..., :h, :w] = arr
    random.seed(seed)
    if (ph, pw) == crop:
        top = left = 0
    else:
        top = random.randint(0, ph - crop[0])
        left = random.randint(0, pw - crop[1])
    return padded[..., top:top + crop[0], left:left + crop[1]]


@pytest.mark.parametrize("size", [(20, 30), (70, 80), (40, 90), (65, 65), (90, 20)])
@pytest.mark.parametrize("seed", [0, 7])
def test_pad_crop_matches_reference_and_aligns(size, seed):
    crop = (65, 65)
    img, lab = coord_sample(*size)
    _, pseudo = coord_sample(*size, pseudo=True)
    random.seed(seed)
    out_img, out_lab = T.PadCrop(*crop)(img, lab)
    random.seed(seed)
    _, out_pseudo = T.PadCrop(*crop)(img, pseudo)
    assert out_img.shape == (3, 65, 65) and out_lab.shape == crop and out_pseudo.shape == (2, 65, 65)
    np.testing.assert_array_equal(np_(out_img), padded_crop_reference(np_(img), crop, 0.0, seed))
    np.testing.assert_array_equal(np_(out_lab), padded_crop_reference(np_(lab), crop, 255, seed))
    np.testing.assert_array_equal(np_(out_pseudo), padded_crop_reference(np_(pseudo), crop, 255.0, seed))
    # alignment: the label at each pixel encodes the same source coordinate as the image
    oi, ol, op = np_(out_img), np_(out_lab), np_(out_pseudo)
    inside = oi[2] == 7
    assert np.array_equal(ol[inside], (oi[0][inside] * 1000 + oi[1][inside]).astype(np.int64))
    assert np.array_equal(op[0][inside], ol[inside].astype(np.float32))
    # padding: image raw 0, label 255, both pseudo channels 255
    assert np.all(oi[:, ~inside] == 0) and np.all(ol[~inside] == 255) and np.all(op[:, ~inside] == 255)
    # crop within bounds: the padding only ever lies at the bottom/right
    if (~inside).any():
        assert size[0] < 65 or size[1] < 65


def test_pad_crop_offsets_are_uniform_over_all_positions():
    img, lab = coord_sample(8, 9)
    seen = set()
    for seed in range(300):
        random.seed(seed)
        out_img, _ = T.PadCrop(5, 5)(img, lab)
        seen.add((int(out_img[0, 0, 0]) - 1, int(out_img[1, 0, 0]) - 1))
    assert seen == {(t, l) for t in range(4) for l in range(5)}


# ----------------------------------------------------------------------------- flip / PadTo
def test_flip_consistent():
    img, lab = coord_sample(5, 6)
    _, pseudo = coord_sample(5, 6, pseudo=True)
    flips = 0
    for seed in range(20):
        random.seed(seed)
        expect_flip = random.random() < 0.5
        random.seed(seed)
        out_img, out_lab = T.RandomHorizontalFlip(0.5)(img, lab)
        random.seed(seed)
        _, out_pseudo = T.RandomHorizontalFlip(0.5)(img, pseudo)
        ref = (lambda a: a[..., ::-1]) if expect_flip else (lambda a: a)
        np.testing.assert_array_equal(np_(out_img), ref(np_(img)))
        np.testing.assert_array_equal(np_(out_lab), ref(np_(lab)))
        np.testing.assert_array_equal(np_(out_pseudo), ref(np_(pseudo)))
        flips += expect_flip
    assert 0 < flips < 20


def test_pad_to():
    img, lab = coord_sample(40, 50)
    out_img, out_lab = T.PadTo(97, 97)(img, lab)
    assert out_img.shape == (3, 97, 97) and out_lab.shape == (97, 97)
    np.testing.assert_array_equal(np_(out_img)[:, :40, :50], np_(img))
    assert np.all(np_(out_img)[:, 40:] == 0) and np.all(np_(out_img)[:, :, 50:] == 0)
    assert np.all(np_(out_lab)[40:] == 255) and np.all(np_(out_lab)[:, 50:] == 255)
    big, _ = T.PadTo(20, 20)(img, lab)
    assert big.shape == (3, 40, 50)


# ----------------------------------------------------------------------------- full pipelines
def uint8_sample(h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    img = tv_tensors.Image(torch.from_numpy(rng.integers(1, 256, (3, h, w), dtype=np.uint8)))
    lab = tv_tensors.Mask(torch.from_numpy(rng.integers(0, 21, (h, w))))
    return img, lab


@pytest.mark.parametrize("norm", ["coco", "imagenet"])
def test_voc_train_pipeline_border_is_black_before_normalisation(norm):
    img, lab = uint8_sample(40, 42)  # 1.5 * 42 = 63 < 65: always padded
    tf = T.train_transforms("voc", crop=(65, 65), norm=norm)
    for seed in range(4):
        random.seed(seed)
        out_img, out_lab = tf(img, lab)
        out_img, out_lab = np_(out_img), np_(out_lab)
        assert out_img.shape == (3, 65, 65) and out_img.dtype == np.float32
        assert out_lab.shape == (65, 65) and out_lab.dtype == np.int64
        pad = out_lab == 255
        assert pad.any() and set(np.unique(out_lab[~pad])) <= set(range(21))
        border = -COCO_MEAN_BGR if norm == "coco" else -IMAGENET_MEAN / IMAGENET_STD
        for c in range(3):
            np.testing.assert_allclose(out_img[c][pad], border[c], rtol=0, atol=1e-4)


def test_voc_train_pipeline_pseudo_both_channels_255_and_pairs_kept():
    img, _ = uint8_sample(40, 42)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 21, (40, 42)).astype(np.float32)
    labels[rng.random((40, 42)) < 0.2] = 255
    pseudo = tv_tensors.Mask(torch.from_numpy(np.stack([labels, labels / 1000.0]).astype(np.float32)))
    tf = T.train_transforms("voc", crop=(65, 65), norm="coco")
    for seed in range(4):
        random.seed(seed)
        out_img, out = tf(img, pseudo)
        out = np_(out)
        assert out.shape == (2, 65, 65) and out.dtype == np.float32
        pad = np.all(np_(out_img) == -COCO_MEAN_BGR[:, None, None].astype(np.float32), axis=0)
        assert pad.any() and np.all(out[:, pad] == 255)
        np.testing.assert_array_equal(out[1][~pad], np.float32(out[0][~pad] / 1000.0))


def test_city_train_pipeline_maps_gt_not_pseudo():
    rng = np.random.default_rng(1)
    img = tv_tensors.Image(torch.from_numpy(rng.integers(0, 256, (3, 32, 64), dtype=np.uint8)))
    ids = rng.integers(0, 34, (32, 64))
    lab = tv_tensors.Mask(torch.from_numpy(ids))
    tf = T.train_transforms("city", crop=(9, 17), norm="imagenet", resize=(16, 32))
    random.seed(0)
    out_img, out_lab = tf(img, lab)
    assert out_img.shape == (3, 9, 17) and out_lab.shape == (9, 17)
    valid_train_ids = set(range(19)) | {255}
    assert set(np.unique(np_(out_lab))) <= valid_train_ids
    # the pseudo map holds train ids already: values 0..18 pass through unmapped (7 -> 7, not 0)
    pseudo = tv_tensors.Mask(torch.full((2, 16, 32), 7.0))
    random.seed(0)
    _, out_p = tf(img, pseudo)
    assert set(np.unique(np_(out_p))) <= {7.0, 255.0}


def test_test_transforms():
    img, lab = uint8_sample(40, 50)
    out_img, out_lab = T.test_transforms("voc", norm="coco", size=(97, 97))(img, lab)
    assert out_img.shape == (3, 97, 97) and out_lab.shape == (97, 97)
    np.testing.assert_array_equal(np_(out_lab)[:40, :50], np_(lab))
    assert np.all(np_(out_lab)[40:] == 255)
    np.testing.assert_allclose(np_(out_img)[:, 60, 60], -COCO_MEAN_BGR, atol=1e-4)
    raw = np_(img).astype(np.float64)
    np.testing.assert_allclose(np_(out_img)[:, :40, :50], raw[::-1] - COCO_MEAN_BGR[:, None, None], atol=1e-4)

    ids = torch.arange(34).repeat(2, 1)  # 2 x 34 labelIds, resized to the same size (identity)
    cimg = tv_tensors.Image(torch.zeros(3, 2, 34, dtype=torch.uint8))
    out_img, out_lab = T.test_transforms("city", norm="imagenet", size=(2, 34))(cimg, tv_tensors.Mask(ids))
    expected = {label_id: train_id for _, label_id, train_id in CITYSCAPES_TRAIN_CLASSES}
    assert np_(out_lab)[0].tolist() == [expected.get(i, 255) for i in range(34)]
    np.testing.assert_allclose(np_(out_img)[:, 0, 0], -IMAGENET_MEAN / IMAGENET_STD, atol=1e-5)

    # default sizes, and image-only calls
    assert default_test_size("voc") == (505, 505) and default_test_size("city") == (512, 1024)
    assert T.test_transforms("voc", norm="coco")(img).shape == (3, 505, 505)
    with pytest.raises(ValueError):
        T.train_transforms("cifar")
