"""segmentation/main.py on a tiny synthetic VOC set: CBC labelling against a numpy reference of
docs/method.md §2.1, supervised → labelling → DMT round trip, resume, skipping finished runs and torchrun
(2 CPU processes). Bad input: tests/test_seg_bad_input.py; test protocols: tests/test_seg_protocols.py."""
from __future__ import annotations

import json
import os
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
