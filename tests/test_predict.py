"""segmentation.predict and classification.predict on hand-made images and random models, against an
independent computation of the model's input convention; bad input is one line, exit 2."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from classification import predict as cls_predict
from classification.models import wrn_28_2
from segmentation.palette import VOC_PALETTE
from segmentation import predict as seg_predict
from segmentation.models import deeplab_v2
from utils.checkpoint import save_checkpoint
from utils.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
COCO_MEAN_BGR = np.array([104.008, 116.669, 122.675], dtype=np.float32)
CIFAR_MEAN = np.array([0.49137, 0.48235, 0.44667], dtype=np.float32)
CIFAR_STD = np.array([0.24706, 0.24353, 0.26157], dtype=np.float32)
TEST = 41  # the VOC test size of the saved config


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")


def random_image(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return np.asarray(Image.open(path).convert("RGB"))


def spread(model: torch.nn.Module, scale: float = 30.0) -> torch.nn.Module:
    """A random DeepLab whose predictions vary over the classes: head weights scaled up."""
    with torch.no_grad():
        for conv in model.classifier[0].convs:
            conv.weight.mul_(scale)
    return model.eval()


@pytest.fixture(scope="module")
def voc_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seg") / "run.pt"
    save_checkpoint(path, model=spread(deeplab_v2(21, "tiny", pretrained=None)))
    path.with_name("run_cfg.json").write_text(json.dumps(
        {"dataset": "voc", "backbone": "tiny", "coco": False, "test_size": [TEST, TEST], "crop_size": None,
         "all_aspp_branches": False, "eval_protocol": "whole"}))
    return path


def reference_voc(checkpoint: Path, rgb: np.ndarray, coco: bool = False) -> np.ndarray:
    """The VOC test convention by hand: pad bottom/right with 0 to 41×41, normalise, one forward,
    bilinear (align_corners=True) to 41×41, argmax, crop to the image."""
    model = deeplab_v2(21, "tiny", pretrained=None)
    model.load_state_dict(torch.load(checkpoint, weights_only=False)["model"])
    model.eval()
    h, w = rgb.shape[:2]
    ph, pw = max(h, TEST), max(w, TEST)
    padded = np.zeros((ph, pw, 3), dtype=np.float32)
    padded[:h, :w] = rgb
    x = (padded[..., ::-1] - COCO_MEAN_BGR) if coco else (padded / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])
        logits = F.interpolate(logits, size=(ph, pw), mode="bilinear", align_corners=True)
    return logits[0, :, :h, :w].argmax(0).numpy()


def test_segmentation_masks_have_each_input_size_and_the_model_prediction(voc_model, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    inputs = {"a": random_image(images / "a.jpg", 30, 37, 1), "b": random_image(images / "b.png", 45, 20, 2)}
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert run_cli(seg_predict.main, ["--checkpoint", str(voc_model), "--input", str(images), "--out", str(out),
                                      "--device", "cpu"]) == 0
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_overlay.png", "b.png", "b_overlay.png"]
    for stem, rgb in inputs.items():
        mask = Image.open(out / f"{stem}.png")
        assert mask.mode == "P" and mask.size == (rgb.shape[1], rgb.shape[0])
        assert np.array(mask.getpalette()[:3 * 256]).reshape(256, 3).tolist() == VOC_PALETTE.tolist()
        predicted = np.asarray(mask)
        expected = reference_voc(voc_model, rgb)
        assert (predicted == expected).mean() > 0.999  # near-ties may round either way
        assert len(np.unique(expected)) > 1  # a test that can fail: the prediction is not constant
        overlay = np.asarray(Image.open(out / f"{stem}_overlay.png")).astype(float)
        assert overlay.shape == rgb.shape
        assert np.abs(overlay - (0.5 * rgb + 0.5 * VOC_PALETTE[predicted])).max() <= 0.5 + 1e-6
    assert "tiny" in stdout and "voc" in stdout and f"{images / 'a.jpg'} -> {out / 'a.png'}" in stdout


def test_segmentation_flags_override_the_config_and_city_is_inferred(tmp_path, capsys):
    """No saved config: 19 classes say Cityscapes, the backbone is found from the weights; the image
    is resized to --test-size and the probabilities back to the image size."""
    torch.manual_seed(1)
    ckpt = tmp_path / "city.pt"
    save_checkpoint(ckpt, model=spread(deeplab_v2(19, "tiny", pretrained=None)))
    rgb = random_image(tmp_path / "street.png", 40, 70, 3)
    out = tmp_path / "out"
    assert run_cli(seg_predict.main, ["--checkpoint", str(ckpt), "--input", str(tmp_path / "street.png"), "--out",
                                      str(out), "--test-size", "32", "64", "--device", "cpu"]) == 0
    assert "city" in capsys.readouterr().out
    mask = np.asarray(Image.open(out / "street.png"))
    assert mask.shape == (40, 70) and mask.max() < 19
    # by hand: resize (bilinear, no antialias) to 32×64, normalise, forward, probabilities to 40×70
    model = deeplab_v2(19, "tiny", pretrained=None)
    model.load_state_dict(torch.load(ckpt, weights_only=False)["model"])
    model.eval()
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(32, 64), mode="bilinear", align_corners=False, antialias=False)
    x = (x / 255 - torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = F.interpolate(model(x), size=(32, 64), mode="bilinear", align_corners=True).softmax(1)
        probs = F.interpolate(probs, size=(40, 70), mode="bilinear", align_corners=False)
    assert (mask == probs[0].argmax(0).numpy()).mean() > 0.999


def test_segmentation_coco_convention_and_msf(voc_model, tmp_path, capsys):
    rgb = random_image(tmp_path / "x.jpg", 33, 33, 4)
    out = tmp_path / "out"
    assert run_cli(seg_predict.main, ["--checkpoint", str(voc_model), "--input", str(tmp_path / "x.jpg"), "--out",
                                      str(out), "--coco", "--device", "cpu"]) == 0
    assert (np.asarray(Image.open(out / "x.png")) == reference_voc(voc_model, rgb, coco=True)).mean() > 0.999
    assert run_cli(seg_predict.main, ["--checkpoint", str(voc_model), "--input", str(tmp_path / "x.jpg"), "--out",
                                      str(tmp_path / "msf"), "--eval-protocol", "msf", "--eval-scales", "0.75", "1",
                                      "--device", "cpu"]) == 0
    assert "msf(0.75/1+flip)" in capsys.readouterr().out
    assert np.asarray(Image.open(tmp_path / "msf" / "x.png")).shape == (33, 33)


@pytest.fixture(scope="module")
def wrn(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = wrn_28_2()
    with torch.no_grad():
        model.fc.weight.mul_(20)
    path = tmp_path_factory.mktemp("cls") / "c--ema.pt"
    save_checkpoint(path, model=model)
    return path


def test_classification_prints_a_class_per_image(wrn, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    small = random_image(images / "a.png", 32, 32, 5)
    big = random_image(images / "b.jpg", 50, 40, 6)
    out = tmp_path / "pred.csv"
    assert run_cli(cls_predict.main, ["--checkpoint", str(wrn), "--input", str(images), "--out", str(out),
                                      "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    # by hand: resize to 32×32 (PIL bilinear), [0, 1], CIFAR mean/std, eval-mode forward, softmax
    model = wrn_28_2()
    model.load_state_dict(torch.load(wrn, weights_only=False)["model"])
    model.eval()
    resized = np.asarray(Image.fromarray(big).resize((32, 32), Image.Resampling.BILINEAR))
    x = np.stack([small, resized]).astype(np.float32) / 255
    x = torch.from_numpy(((x - CIFAR_MEAN) / CIFAR_STD).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        probs = model(x).softmax(1).numpy()
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    rows = list(csv.DictReader(out.open()))
    for line, row, path, p in zip(lines, rows, ("a.png", "b.jpg"), probs):
        shown_path, shown_class, shown_conf = line.split("\t")
        assert shown_path == str(images / path) and shown_class == names[p.argmax()]
        assert float(shown_conf) == pytest.approx(p.max(), abs=1e-4)
        assert row["path"] == str(images / path) and int(row["class_id"]) == p.argmax()
        assert row["class"] == names[p.argmax()] and float(row["confidence"]) == pytest.approx(p.max(), abs=1e-5)


# ----------------------------------------------------------------------------- bad input
@pytest.fixture
def bad(tmp_path, voc_model, wrn) -> dict[str, Path]:
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    random_image(tmp_path / "ok.png", 20, 20, 7)
    return {"EMPTY": tmp_path / "empty", "GARBAGE": tmp_path / "garbage.pt", "BROKEN": tmp_path / "broken.jpg",
            "OK": tmp_path / "ok.png", "VOC": voc_model, "WRN": wrn, "MISSING": tmp_path / "missing.pt"}


SEG_CASES = {
    "empty folder": (["--checkpoint", "VOC", "--input", "EMPTY"], "EMPTY", "no image files"),
    "unreadable image": (["--checkpoint", "VOC", "--input", "BROKEN"], "BROKEN", "cannot decode image"),
    "missing input": (["--checkpoint", "VOC", "--input", "MISSING"], "MISSING", "no such file or folder"),
    "not a checkpoint": (["--checkpoint", "GARBAGE", "--input", "OK"], "GARBAGE", "not a readable PyTorch checkpoint"),
    "missing checkpoint": (["--checkpoint", "MISSING", "--input", "OK"], "MISSING", "checkpoint not found"),
    "classification checkpoint": (["--checkpoint", "WRN", "--input", "OK"], "WRN", "not a DeepLab-v2"),
    "dataset of another class count": (["--checkpoint", "VOC", "--input", "OK", "--dataset", "city"], "VOC",
                                       "has 21 classes"),
}
CLS_CASES = {
    "empty folder": (["--checkpoint", "WRN", "--input", "EMPTY"], "EMPTY", "no image files"),
    "unreadable image": (["--checkpoint", "WRN", "--input", "BROKEN"], "BROKEN", "cannot decode image"),
    "segmentation checkpoint": (["--checkpoint", "VOC", "--input", "OK"], "VOC", "does not fit this model"),
    "not a checkpoint": (["--checkpoint", "GARBAGE", "--input", "OK"], "GARBAGE", "not a readable PyTorch checkpoint"),
}


def _argv(template, bad):
    return [str(bad[a]) if a in bad else a for a in template] + ["--device", "cpu"]


@pytest.mark.parametrize("case", sorted(SEG_CASES))
def test_segmentation_bad_input_is_one_line_exit_2(case, bad, tmp_path, capsys):
    template, names, says = SEG_CASES[case]
    out = tmp_path / "out"
    assert run_cli(seg_predict.main, _argv(template, bad) + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(bad[names]) in err and says in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", sorted(CLS_CASES))
def test_classification_bad_input_is_one_line_exit_2(case, bad, tmp_path, capsys):
    template, names, says = CLS_CASES[case]
    assert run_cli(cls_predict.main, _argv(template, bad) + ["--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(bad[names]) in err and says in err
    assert not (tmp_path / "p.csv").exists()


def test_predict_cli_exit_status_in_a_real_process(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "segmentation.predict", "--checkpoint", "x.pt", "--input",
                           str(tmp_path / "empty"), "--out", str(tmp_path / "o")], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no image files" in proc.stderr
