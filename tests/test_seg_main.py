"""segmentation/main.py on a tiny synthetic VOC set: CBC labelling against a numpy reference of
docs/method.md §2.1, supervised → labelling → DMT round trip, resume, skipping finished runs, bad input,
test protocols (also unit-checked on hand-made models) and torchrun (2 CPU processes)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from segmentation import training
from segmentation.evaluation import (Protocol, probabilities, probabilities_msf, probabilities_sliding,
                                     probabilities_whole, window_starts)
from segmentation.generate_splits import id_list_text
from segmentation.main import main
from segmentation.models import deeplab_v2
from tests.helpers import log_lines, run_program, seg_main_argv, tb_tags, voc_with_split
from utils.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
TEST_SIZE = 41
CROP = 33
NUM_CLASSES = 21
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
COST_FIELDS = {"wall_s", "images_per_s", "peak_mem_gb", "device", "procs"}


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    """16 train images (4 labelled, 12 unlabelled) of 30..40 px, 3 val images."""
    root = voc_with_split(tmp_path_factory.mktemp("voc"), num_train=16, num_val=3, size_range=(30, 40), seed=0)
    lists = root / "ImageSets" / "Segmentation"
    (lists / "valtiny.txt").write_text(id_list_text((lists / "val.txt").read_text().split()[:2]))
    return root


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")


@pytest.fixture(scope="module")
def labeller(voc, tmp_path_factory) -> Path:
    """A random model whose predictions vary over classes and confidences: BN statistics from
    real images (train mode), head weights scaled up; class 20 is never predicted."""
    torch.manual_seed(0)
    model = deeplab_v2(NUM_CLASSES, "mobilenet_v3_large", pretrained=None)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    images = torch.stack([torch.from_numpy(normalised_padded(voc, i)) for i in unlabelled_ids(voc)[:8]])
    with torch.no_grad():
        model(images)
        for conv in model.classifier[0].convs:
            conv.weight.mul_(3)
            conv.bias[20] = -1e3
    path = tmp_path_factory.mktemp("ckpt") / "labeller.pt"
    save_checkpoint(path, model=model)
    return path


def unlabelled_ids(voc: Path) -> list[str]:
    return (voc / "ImageSets" / "Segmentation" / "20_unlabeled_0.txt").read_text().split()


def common(voc: Path, out: Path, *extra: str) -> list[str]:
    return seg_main_argv(voc, out, *extra, backbone="mobilenet_v3_large", crop=CROP, test_size=TEST_SIZE)


def fail_pseudo_label_save(monkeypatch, error: BaseException, at: int = 5):
    """segmentation.label_pass's ``at``-th pseudo-label write raises ``error`` (the ones before it are
    written); returns the real writer."""
    import segmentation.label_pass as label_pass
    real, calls = label_pass.save_npy_atomic, []

    def failing_save(path, array):
        calls.append(path)
        if len(calls) == at:
            raise error
        real(path, array)

    monkeypatch.setattr(label_pass, "save_npy_atomic", failing_save)
    return real


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_program(main, argv, capsys)


# ----------------------------------------------------------------- the numpy reference (docs/method.md §2.1)
def normalised_padded(voc: Path, sample_id: str) -> np.ndarray:
    """ImageNet-normalised 3×41×41 float32, zero-padded bottom/right *before* normalisation."""
    rgb = np.asarray(Image.open(voc / "JPEGImages" / f"{sample_id}.jpg").convert("RGB"), dtype=np.float32)
    padded = np.zeros((TEST_SIZE, TEST_SIZE, 3), dtype=np.float32)
    padded[: rgb.shape[0], : rgb.shape[1]] = rgb
    return ((padded / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy()


def reference_predictions(voc: Path, checkpoint: Path, ids: list[str]
                          ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image, one at a time: (confidence, label, clear) of the original-size crop; ``clear`` is
    False where the two top classes are within 1e-4 (batching may swap their order)."""
    model = deeplab_v2(NUM_CLASSES, "mobilenet_v3_large", pretrained=None)
    model.load_state_dict(torch.load(checkpoint, weights_only=False)["model"])
    model.eval()
    result = {}
    with torch.no_grad():
        for sample_id in ids:
            h, w = Image.open(voc / "JPEGImages" / f"{sample_id}.jpg").size[::-1]
            logits = model(torch.from_numpy(normalised_padded(voc, sample_id))[None])
            logits = F.interpolate(logits, size=(TEST_SIZE, TEST_SIZE), mode="bilinear", align_corners=True)
            probs = logits[0, :, :h, :w].softmax(dim=0).numpy()
            top2 = np.sort(probs, axis=0)[-2:]
            result[sample_id] = (probs.max(axis=0), probs.argmax(axis=0), top2[1] - top2[0] > 1e-4)
    return result


def reference_thresholds(confidences: list[np.ndarray], labels: list[np.ndarray], ratio: float,
                         stride: int = 16) -> np.ndarray:
    """Every 16th pixel of each image (row-major), pooled by class, sorted: P_c[n − ⌊n·r⌋ − 1]."""
    conf = np.concatenate([c.reshape(-1)[::stride] for c in confidences])
    lab = np.concatenate([x.reshape(-1)[::stride] for x in labels])
    thresholds = np.full(NUM_CLASSES, 1e-5, dtype=np.float32)
    for c in range(NUM_CLASSES):
        samples = np.sort(conf[lab == c])
        n = len(samples)
        if ratio >= 1 and n:
            thresholds[c] = samples[0]
        elif n * ratio >= 1:
            thresholds[c] = samples[n - int(np.floor(n * ratio)) - 1]
    return thresholds


def check_pseudo_folder(folder: Path, reference: dict, ratio: float) -> dict:
    """Files H×W×2 float32; confidences = the reference; labels = argmax, 255 exactly below the
    class threshold; the record's thresholds = the numpy reference's on the stored confidences."""
    record = json.loads((folder / "labeling.json").read_text())
    thresholds = np.array(record["thresholds"], dtype=np.float32)
    stored_conf, ref_labels, kept, total = [], [], 0, 0
    for sample_id, (ref_conf, ref_label, clear) in reference.items():
        arr = np.load(folder / f"{sample_id}.npy")
        assert arr.dtype == np.float32 and arr.shape == ref_conf.shape + (2,)
        label, conf = arr[..., 0], arr[..., 1]
        np.testing.assert_allclose(conf, ref_conf, atol=2e-5)
        assert clear.mean() > 0.95
        ignored = conf < thresholds[ref_label]
        np.testing.assert_array_equal((label == 255)[clear], ignored[clear])
        np.testing.assert_array_equal(label[~ignored & clear], ref_label[~ignored & clear])
        ignored = np.where(clear, ignored, label == 255)
        stored_conf.append(conf)
        ref_labels.append(ref_label)
        kept, total = kept + int((~ignored).sum()), total + ignored.size
    np.testing.assert_array_equal(thresholds, reference_thresholds(stored_conf, ref_labels, ratio))
    np.testing.assert_allclose(reference_thresholds([r[0] for r in reference.values()],
                                                    [r[1] for r in reference.values()], ratio), thresholds, atol=2e-5)
    assert record["kept_fraction"] == pytest.approx(kept / total)
    assert 0 < kept < total  # the ratio really removed pixels
    return record


# ------------------------------------------------------------------------------------ labelling
def test_labelling_matches_numpy_reference(voc, labeller, tmp_path, capsys):
    pseudo = tmp_path / "pseudo"
    argv = common(voc, tmp_path, "--state", "1", "--labeling", "--exp-name", "lab", "--continue-from",
                  str(labeller), "--label-ratio", "0.5", "--batch-size-labeled", "8", "--pseudo-dir", str(pseudo))
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    ids = unlabelled_ids(voc)
    reference = reference_predictions(voc, labeller, ids)
    record = check_pseudo_folder(pseudo, reference, 0.5)
    assert sorted(p.stem for p in pseudo.glob("*.npy")) == sorted(ids)
    present = set(np.concatenate([r[1].reshape(-1)[::16] for r in reference.values()]).tolist())
    missing = [c for c in range(NUM_CLASSES) if c not in present]
    assert 20 in missing and record["missing_classes"] == missing
    assert all(record["thresholds"][c] == pytest.approx(1e-5) for c in missing)
    assert len((pseudo / "exceptions.txt").read_text().splitlines()) == len(missing)
    assert f"kept {record['kept_fraction']:.2%}" in out
    assert "labeling/kept_fraction" in tb_tags(tmp_path / "tb" / "lab")
    # a complete pass is not redone
    rc, out, _ = run(argv, capsys)
    assert rc == 0 and "already labelled" in out


def test_labelling_1000_images_matches_numpy_thresholds(labeller, tmp_path_factory, tmp_path, capsys):
    """The issue's check at scale: 1,000 unlabelled images, thresholds = the numpy reference's."""
    root = voc_with_split(tmp_path_factory.mktemp("voc1000"), num_train=1004, num_val=1, size=(24, 24), seed=3)
    pseudo = tmp_path / "pseudo"
    rc, _, err = run(common(root, tmp_path, "--state", "1", "--labeling", "--exp-name", "lab1000", "--continue-from",
                            str(labeller), "--label-ratio", "0.3", "--batch-size-labeled", "1",
                            "--pseudo-dir", str(pseudo)), capsys)
    assert rc == 0, err
    assert len(list(pseudo.glob("*.npy"))) == 1000
    check_pseudo_folder(pseudo, reference_predictions(root, labeller, unlabelled_ids(root)), 0.3)


def test_labelling_killed_midway_restarts_cleanly(voc, labeller, tmp_path, capsys, monkeypatch):
    import segmentation.label_pass as label_pass
    pseudo = tmp_path / "pseudo"
    argv = common(voc, tmp_path, "--state", "1", "--labeling", "--exp-name", "lab", "--continue-from",
                  str(labeller), "--label-ratio", "1.0", "--batch-size-labeled", "4", "--pseudo-dir", str(pseudo))
    real_save = fail_pseudo_label_save(monkeypatch, KeyboardInterrupt(), at=5)
    rc, _, _ = run(argv, capsys)
    assert rc == 130 and not pseudo.exists()  # nothing half-written in place
    monkeypatch.setattr(label_pass, "save_npy_atomic", real_save)
    rc, _, err = run(argv, capsys)
    assert rc == 0, err
    assert sorted(p.stem for p in pseudo.glob("*.npy")) == sorted(unlabelled_ids(voc))
    assert not pseudo.with_name("pseudo.partial").exists()
    check_pseudo_folder(pseudo, reference_predictions(voc, labeller, unlabelled_ids(voc)), 1.0)


# ------------------------------------------------------------------------------ train, label, DMT
def test_supervised_label_dmt_round_trip(voc, tmp_path, capsys):
    out = tmp_path / "runs"
    base = common(voc, out, "--state", "2", "--exp-name", "base", "--epochs", "2", "--batch-size-labeled", "4",
                  "--val-num-steps", "1", "--seed", "1")
    rc, _, err = run(base, capsys)
    assert rc == 0, err
    best, fields = log_lines(out)["base"]
    assert COST_FIELDS <= set(fields) and fields["protocol"] == "whole" and fields["procs"] == "1"
    assert fields["iters"] == "2"  # 2 epochs × ⌈4 / 4⌉
    assert 0 <= float(fields["final"]) <= 100 and 0 <= best <= 100
    snapshot = torch.load(out / "base.pt", weights_only=False)
    assert {"model", "optimizer", "lr_scheduler"} <= set(snapshot)
    assert json.loads((out / "base_cfg.json").read_text())["epochs"] == 2
    assert not (out / "base.resume.pt").exists()
    assert {"train/loss", "train/lr", "val/miou", "val/pixel_acc"} <= tb_tags(out / "tb" / "base")

    pseudo = out / "pseudo" / "base-for-dmt"
    rc, _, err = run(common(voc, out, "--state", "1", "--labeling", "--exp-name", "base-for-dmt", "--continue-from",
                            str(out / "base.pt"), "--label-ratio", "0.6", "--batch-size-labeled", "8",
                            "--pseudo-dir", str(pseudo), "--mixed-precision"), capsys)
    assert rc == 0, err
    conf = np.concatenate([np.load(p)[..., 1].ravel() for p in pseudo.glob("*.npy")])
    np.testing.assert_array_equal(conf.astype(np.float16).astype(np.float32), conf)  # fp16-rounded under autocast

    dmt = common(voc, out, "--state", "1", "--exp-name", "dmt", "--continue-from", str(out / "base.pt"),
                 "--pseudo-dir", str(pseudo), "--epochs", "2", "--gamma1", "5", "--gamma2", "5", "--lr", "0.001")
    rc, _, err = run(dmt, capsys)
    assert rc == 0, err
    _, fields = log_lines(out)["dmt"]
    assert fields["iters"] == "4"  # L = 2 epochs × ⌈12 pseudo images / 7⌉, not the labelled loader's length
    assert {"train/disagree", "train/current_win", "train/avg_weights", "train/loss", "train/lr",
            "val/miou"} <= tb_tags(out / "tb" / "dmt")

    # finished runs are skipped at once, without touching the data (here: a missing dataset)
    for argv in (base, dmt):
        argv = [a if a != str(voc) else str(tmp_path / "gone") for a in argv]
        rc, stdout, _ = run(argv, capsys)
        assert rc == 0 and "already finished" in stdout
    assert len((out / "log.txt").read_text().splitlines()) == 2


def test_online_ablation_runs_without_pseudo_folder(voc, tmp_path, capsys):
    rc, _, err = run(common(voc, tmp_path, "--state", "1", "--loss", "online", "--online-double-step",
                            "--exp-name", "online", "--epochs", "1", "--do-not-save"), capsys)
    assert rc == 0, err
    assert log_lines(tmp_path)["online"][1]["iters"] == "2"
    assert not (tmp_path / "online.pt").exists()  # --do-not-save


def test_interrupted_run_resumes_to_the_same_weights(voc, tmp_path, capsys, monkeypatch):
    def argv(name):
        return common(voc, tmp_path, "--state", "2", "--exp-name", name, "--epochs", "3", "--batch-size-labeled", "2",
                      "--val-num-steps", "100", "--resume-every", "1", "--deterministic")

    assert run(argv("straight"), capsys)[0] == 0
    real = training.supervised_step

    def interrupted(model, loss_fn, rt):
        step = real(model, loss_fn, rt)

        def wrapped(batch, s):
            if s == 4:
                raise KeyboardInterrupt
            return step(batch, s)
        return wrapped

    monkeypatch.setattr(training, "supervised_step", interrupted)
    assert run(argv("resumed"), capsys)[0] == 130
    assert (tmp_path / "resumed.resume.pt").exists() and "resumed" not in log_lines(tmp_path)
    monkeypatch.setattr(training, "supervised_step", real)
    rc, _, err = run(argv("resumed"), capsys)
    assert rc == 0 and "resuming at iteration 3/6" in err
    a = torch.load(tmp_path / "straight.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed.pt", weights_only=False)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert log_lines(tmp_path)["resumed"][0] == log_lines(tmp_path)["straight"][0]


# ----------------------------------------------------------------------------------- bad input
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


# ------------------------------------------------------------------------------- test protocols
def test_state_3_protocols_agree_where_they_must(voc, labeller, tmp_path, capsys):
    results = {}
    for name, extra in {"whole": [], "sliding-one-window": ["--eval-protocol", "sliding", "--eval-crop", "41", "41"],
                        "msf-1-noflip": ["--eval-protocol", "msf", "--eval-scales", "1.0", "--eval-no-flip"],
                        "msf": ["--eval-protocol", "msf", "--eval-scales", "0.75", "1.0"],
                        "sliding": ["--eval-protocol", "sliding", "--eval-crop", "24", "24", "--eval-stride", "16", "16"],
                        "tiny": ["--valtiny"]}.items():
        rc, _, err = run(common(voc, tmp_path, "--state", "3", "--exp-name", name, "--continue-from", str(labeller),
                                *extra), capsys)
        assert rc == 0, err
        results[name] = log_lines(tmp_path)[name]
    assert results["sliding-one-window"][0] == results["whole"][0]
    assert results["msf-1-noflip"][0] == results["whole"][0]
    assert results["whole"][1]["protocol"] == "whole" and results["tiny"][1]["val"] == "valtiny"
    assert results["msf"][1]["protocol"] == "msf(0.75/1+flip)"
    assert results["sliding"][1]["protocol"] == "sliding(24x24/16x16)"


class Pointwise(nn.Module):
    """A 1×1 convolution: flip-equivariant and independent of the window it sees."""

    def __init__(self, channels=3, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(channels, classes, 1)

    def forward(self, x):
        return self.conv(x)


class WindowMean(nn.Module):
    """Logits (mean of channel 0 over the whole input, 0): depends on the window only."""

    def forward(self, x):
        m = x[:, :1].mean(dim=(2, 3), keepdim=True).expand(-1, 1, *x.shape[-2:])
        return torch.cat([m, torch.zeros_like(m)], dim=1)


def test_window_starts_by_hand():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(10, 4, 4) == [0, 4, 6]
    assert window_starts(3, 4, 2) == [0]
    assert window_starts(4, 4, 2) == [0]


def test_sliding_window_averages_window_probabilities_by_hand():
    x = torch.tensor([1.0, 3.0, -2.0, 5.0]).view(1, 1, 1, 4)
    probs = probabilities_sliding(WindowMean(), x, window=(1, 2), stride=(1, 1))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731  softmax of (m, 0), class 0
    w01, w12, w23 = sig(2.0), sig(0.5), sig(1.5)
    expected = [w01, (w01 + w12) / 2, (w12 + w23) / 2, w23]
    np.testing.assert_allclose(probs[0, 0, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(probs.sum(dim=1).numpy(), 1.0, rtol=1e-6)


def test_protocol_identities_on_tiny_models():
    torch.manual_seed(1)
    images = torch.randn(2, 3, 17, 23)
    deeplab = deeplab_v2(5, "mobilenet_v3_large", pretrained=None).eval()
    with torch.no_grad():
        whole = probabilities_whole(deeplab, images)
        assert whole.shape == (2, 5, 17, 23)
        torch.testing.assert_close(probabilities_sliding(deeplab, images, (17, 23), (5, 5)), whole)
        torch.testing.assert_close(probabilities_msf(deeplab, images, [1.0], flip=False), whole)
        torch.testing.assert_close(probabilities(deeplab, images, Protocol("msf", scales=(1.0,), flip=False)), whole)
        pointwise = Pointwise()
        torch.testing.assert_close(probabilities_msf(pointwise, images, [1.0], flip=True),
                                   probabilities_whole(pointwise, images))
        torch.testing.assert_close(probabilities_sliding(pointwise, images, (8, 8), (3, 5)),
                                   probabilities_whole(pointwise, images))
        # a flip-sensitive model: msf+flip = the mean of the direct and the mirrored-back pass
        mirrored = probabilities_whole(deeplab, images.flip(-1)).flip(-1)
        torch.testing.assert_close(probabilities_msf(deeplab, images, [1.0], flip=True), (whole + mirrored) / 2)


# ------------------------------------------------------------------------------------ torchrun
def torchrun(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DMT_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "segmentation.main", *argv], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


def test_torchrun_labelling_pools_thresholds_and_dmt_trains(voc, labeller, tmp_path):
    pseudo = tmp_path / "pseudo"
    proc = torchrun(common(voc, tmp_path, "--state", "1", "--labeling", "--exp-name", "lab", "--continue-from",
                           str(labeller), "--label-ratio", "0.5", "--batch-size-labeled", "8",
                           "--pseudo-dir", str(pseudo)), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_pseudo_folder(pseudo, reference_predictions(voc, labeller, unlabelled_ids(voc)), 0.5)
    proc = torchrun(common(voc, tmp_path, "--state", "1", "--exp-name", "dmt", "--continue-from", str(labeller),
                           "--pseudo-dir", str(pseudo), "--epochs", "1", "--batch-size-labeled", "2",
                           "--batch-size-pseudo", "6", "--gamma1", "5", "--gamma2", "5"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = log_lines(tmp_path)
    assert list(lines) == ["dmt"] and lines["dmt"][1]["procs"] == "2"
    assert lines["dmt"][1]["iters"] == "2"  # 12 pseudo images over 2 ranks at 3 per rank and step
    # the rank-0 snapshot loads back into a fresh single-process model (no "module." prefixes)
    snapshot = torch.load(tmp_path / "dmt.pt", weights_only=False)
    assert not any(k.startswith("module.") for k in snapshot["model"])
    fresh = deeplab_v2(NUM_CLASSES, "mobilenet_v3_large", pretrained=None)
    fresh.load_state_dict(snapshot["model"])
