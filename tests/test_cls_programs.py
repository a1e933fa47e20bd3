"""classification.main_fs / main_dmt on a tiny synthetic CIFAR-10: labelling against a numpy
reference of docs/method.md §2.2, the DMT step's loss against an independent computation of §3.3, baseline →
test → label → DMT round trip (bf16 autocast on CPU), finished-run skip, resume, bad input and
labelling under torchrun (2 CPU processes)."""
from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from classification import main_dmt, main_fs, training
from classification.cifar import read_pseudo
from classification.models import wrn_28_2
from tests.helpers import cifar_with_splits, log_lines, run_program as run, tb_tags
from utils.amp import Precision
from utils.checkpoint import save_checkpoint
from utils.cli import Runtime
from utils.distributed import DistInfo
from utils import trainer

REPO = Path(__file__).resolve().parents[1]
MEAN = np.array([0.49137, 0.48235, 0.44667], dtype=np.float32)  # docs/method.md §6.2
STD = np.array([0.24706, 0.24353, 0.26157], dtype=np.float32)
SPLIT = "2_seed1"  # 2 labelled images per class; 8 - 3 (valtiny) - 2 = 3 unlabelled per class
COST_FIELDS = {"wall_s", "images_per_s", "peak_mem_gb", "device", "procs"}


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    return cifar_with_splits(tmp_path_factory.mktemp("cifar"), sizes=(2,))


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")


def load_pickle(path: Path) -> dict:
    """A pickle with str keys (the official batches, and their copy ``test``, have bytes keys)."""
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}


def split_file(cifar: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    entry = load_pickle(cifar / "cifar-10-batches-py" / name)
    return entry["data"], np.array(entry["labels"])


def normalised(rows: np.ndarray) -> torch.Tensor:
    """The test transform by hand: rows → CHW floats in [0, 1] → (x − mean) / std (docs/method.md §6.2)."""
    images = rows.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return torch.from_numpy((images - MEAN[:, None, None]) / STD[:, None, None])


@pytest.fixture(scope="module")
def labeller(cifar, tmp_path_factory) -> Path:
    """A random WRN whose confidences spread out: BN statistics from real images, FC scaled up."""
    torch.manual_seed(0)
    model = wrn_28_2()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    with torch.no_grad():
        model(normalised(split_file(cifar, "train_seed1")[0]))
        model.fc.weight.mul_(20)
    path = tmp_path_factory.mktemp("ckpt") / "labeller.pt"
    save_checkpoint(path, model=model)
    return path


def reference_softmax(checkpoint: Path, rows: np.ndarray) -> np.ndarray:
    model = wrn_28_2()
    model.load_state_dict(torch.load(checkpoint, weights_only=False)["model"])
    model.eval()
    with torch.no_grad():
        logits = model(normalised(rows)).double().numpy()
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def common(cifar: Path, out: Path, *extra: str) -> list[str]:
    return ["--data-root", str(cifar), "--out-dir", str(out), "--device", "cpu", "--workers", "0", *extra]


# ----------------------------------------------------------------- labelling (docs/method.md §2.2, §11.11)
def check_pseudo_file(cifar: Path, path: Path, labeller: Path, ratio: float) -> int:
    """The pickle holds exactly the rows a numpy reference keeps, in file order, with their softmax."""
    rows, _ = split_file(cifar, f"{SPLIT}_unlabeled")
    probs = reference_softmax(labeller, rows)
    confidence = probs.max(axis=1).astype(np.float32)
    ordered = np.sort(confidence)
    k = 0.0 if ratio >= 1 else ordered[int(-ratio * len(ordered) + 1)]
    assert np.min(np.abs(np.delete(confidence, np.flatnonzero(confidence == k)) - k), initial=1) > 1e-5
    keep = confidence > k
    entry = load_pickle(path)
    assert set(entry) == {"data", "labels"}
    assert entry["data"].dtype == np.uint8 and entry["labels"].dtype == np.float32
    np.testing.assert_array_equal(entry["data"], rows[keep])
    np.testing.assert_allclose(entry["labels"], probs[keep], atol=1e-5)
    again = read_pseudo(path)  # the project's reader agrees
    np.testing.assert_array_equal(again.data, rows[keep])
    np.testing.assert_array_equal(again.targets, entry["labels"])
    return int(keep.sum())


def test_labelling_selects_the_reference_images_and_skips_a_done_pass(cifar, labeller, tmp_path, capsys):
    pseudo = tmp_path / "pseudo"
    argv = common(cifar, tmp_path, "--labeling", "--train-set", SPLIT, "--continue-from", str(labeller),
                  "--label-ratio", "0.5", "--batch-size-labeled", "7", "--pseudo-dir", str(pseudo))
    rc, out, err = run(main_dmt.main, argv, capsys)
    assert rc == 0, err
    kept = check_pseudo_file(cifar, pseudo / f"{SPLIT}_pseudo", labeller, 0.5)
    assert kept == 30 * 0.5 - 2 == json.loads((pseudo / f"{SPLIT}_pseudo.json").read_text())["kept"]
    assert "kept 13 " in out
    rc, out, _ = run(main_dmt.main, argv, capsys)
    assert rc == 0 and "already labelled" in out
    # another ratio is another pass: r = 1 keeps every image (threshold 0)
    rc, _, err = run(main_dmt.main, [a if a != "0.5" else "1" for a in argv], capsys)
    assert rc == 0, err
    assert check_pseudo_file(cifar, pseudo / f"{SPLIT}_pseudo", labeller, 1.0) == 30


# ----------------------------------------------------------------- the DMT step (docs/method.md §3.3)
def reference_dmt_loss(model: nn.Module, x: torch.Tensor, y: np.ndarray, c: np.ndarray, split: int,
                       g1: float, g2: float, labeled_weight: float, lam: float, perm: np.ndarray) -> float:
    """Per sample, by hand: weights from a train-mode forward of the un-mixed batch, mixed with the
    images; loss = mean of w̃ [λ·CE(y) + (1−λ)·CE(y_π)] on a second forward of the mixed batch."""
    with torch.no_grad():
        logits = model(x).double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    w = np.empty(len(y))
    for n in range(len(y)):
        d, q, p_y = p[n].argmax(), p[n].max(), p[n, y[n]]
        if n >= split:
            w[n] = labeled_weight
        elif d == y[n]:
            w[n] = p_y ** g1
        elif q > c[n]:
            w[n] = 0.0
        else:
            w[n] = p_y ** g2
    w_mixed = lam * w + (1 - lam) * w[perm]
    with torch.no_grad():
        logits = model(lam * x + (1 - lam) * x[torch.from_numpy(perm)]).double().numpy()
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    ce = -(lam * log_p[np.arange(len(y)), y] + (1 - lam) * log_p[np.arange(len(y)), y[perm]])
    return float(np.mean(w_mixed * ce))


def test_dmt_step_loss_equals_an_independent_computation():
    torch.manual_seed(0)
    model = wrn_28_2().train()
    x = torch.randn(7, 3, 32, 32)
    with torch.no_grad():
        decision = copy.deepcopy(model)(x).argmax(1).numpy()  # train mode: batch statistics
    split = 5
    other = (decision + 1) % 10
    # pseudo: agree, disagree (current wins: c = 0), disagree (teacher surer: c = 1), agree, disagree (c = 1)
    y = np.array([decision[0], other[1], other[2], decision[3], other[4], 3, 7])
    c = np.array([0.9, 0.0, 1.0, 0.4, 1.0, 1.0, 1.0], dtype=np.float32)
    perm = np.array([3, 6, 0, 5, 1, 4, 2])
    lam, g1, g2, lw = 0.7, 2.0, 3.0, 0.6
    reference = reference_dmt_loss(copy.deepcopy(model), x, y, c, split, g1, g2, lw, lam, perm)
    tracked = model.bn1.num_batches_tracked.item()
    loss, stats = training.dmt_mixup_loss(model, x, torch.from_numpy(y), torch.from_numpy(c), split, g1, g2, lw,
                                          lam, torch.from_numpy(perm), Precision("fp32", torch.device("cpu")))
    assert loss.item() == pytest.approx(reference, rel=1e-5)
    assert model.bn1.num_batches_tracked.item() == tracked + 2  # the weight forward ran in train mode
    assert stats["disagree"].item() == 3 and stats["current_win"].item() == 1
    loss.backward()
    assert model.fc.weight.grad is not None


def test_step_ramps_gamma_and_mixes_with_lambda_at_least_a_half(monkeypatch):
    total = 10
    args = argparse.Namespace(alpha=0.75, gamma1=4.0, gamma2=2.0, labeled_weight=1.0, ramp_off_by_one=False)
    rt = Runtime(torch.device("cpu"), DistInfo(), Precision("fp32", torch.device("cpu")), torch.contiguous_format)
    model = wrn_28_2()
    probs = torch.softmax(torch.randn(3, 10), dim=1)
    batch = ((torch.randn(3, 3, 32, 32), probs), (torch.randn(2, 3, 32, 32), torch.tensor([1, 2])))
    lambdas = []
    real = training.draw_lambda
    monkeypatch.setattr(training, "draw_lambda", lambda alpha, keep_max: lambdas.append(real(alpha, keep_max)) or lambdas[-1])
    for off_by_one, step_number, expected in ((False, 1, np.exp(-5 * 0.9 ** 2)), (True, 1, 1.0),
                                              (True, 4, np.exp(-5 * 0.6 ** 2)), (False, 10, 1.0)):
        args.ramp_off_by_one = off_by_one
        _, stats, images = training.dmt_step(model, args, rt, total)(batch, step_number)
        assert images == 5
        assert stats["gamma1"].item() == pytest.approx(4 * expected)
        assert stats["gamma2"].item() == pytest.approx(2 * expected)
    np.random.seed(0)
    assert len(lambdas) == 4 and min(real(0.75, True) for _ in range(100)) >= 0.5


# ------------------------------------------------------------------------------ round trip
def test_baseline_test_label_dmt_round_trip_with_bf16(cifar, tmp_path, capsys):
    out = tmp_path / "runs"
    base = common(cifar, out, "--exp-name", "b__p0", "--train-set", f"{SPLIT}_labeled", "--ra", "--n", "1",
                  "--m", "10", "--alpha", "0.75", "--batch-size", "8", "--epochs", "1", "--ema-decay", "0.001")
    rc, _, err = run(main_fs.main, base, capsys)
    assert rc == 0, err
    best, fields = log_lines(out)["b__p0"]
    assert COST_FIELDS <= set(fields) and fields["iters"] == "3"  # ⌈20 / 8⌉
    assert fields["val"] == "test" and 0 <= best <= 100
    assert {"model", "optimizer", "lr_scheduler"} <= set(torch.load(out / "b__p0.pt", weights_only=False))
    ema = torch.load(out / "b__p0--ema.pt", weights_only=False)
    assert ema["optimizer"] is None and ema["lr_scheduler"] is None
    assert {"train/loss", "train/accuracy", "train/lr", "val/accuracy"} <= tb_tags(out / "tb" / "b__p0")

    # --state 2: the EMA's accuracy on the test set, against a reference computation
    rc, _, err = run(main_fs.main, common(cifar, out, "--state", "2", "--exp-name", "b__p0--test",
                                          "--continue-from", str(out / "b__p0--ema.pt")), capsys)
    assert rc == 0, err
    rows, labels = split_file(cifar, "test")
    probs = reference_softmax(out / "b__p0--ema.pt", rows)
    correct = probs.argmax(1) == labels
    value, fields = log_lines(out)["b__p0--test"]
    assert value == pytest.approx(100 * correct.mean(), abs=1e-3)
    assert float(fields["fine_grained"]) == pytest.approx(100 * (probs.max(1) * correct).mean(), abs=1e-3)
    # unnamed, as the original: a "test: <acc>" line every time
    for _ in range(2):
        assert run(main_fs.main, common(cifar, out, "--state", "2", "--continue-from", str(out / "b__p0--ema.pt"),
                                        "--valtiny", "--fine-grain"), capsys)[0] == 0
    assert sum(line.startswith("test: ") for line in (out / "log.txt").read_text().splitlines()) == 2

    pseudo = out / "pseudo"
    rc, _, err = run(main_dmt.main, common(cifar, out, "--labeling", "--train-set", SPLIT, "--label-ratio", "0.6",
                                           "--continue-from", str(out / "b__p0--ema.pt"), "--pseudo-dir", str(pseudo)),
                     capsys)
    assert rc == 0, err
    kept = len(load_pickle(pseudo / f"{SPLIT}_pseudo")["data"])
    dmt = common(cifar, out, "--exp-name", "b__p1", "--train-set", SPLIT, "--pseudo-dir", str(pseudo), "--gamma1", "4",
                 "--gamma2", "4", "--batch-size-labeled", "4", "--batch-size-pseudo", "6", "--epochs", "2",
                 "--lr", "0.1", "--valtiny", "--fine-grain", "--seed", "6", "--mixed-precision", "--amp-dtype", "bf16")
    rc, _, err = run(main_dmt.main, dmt, capsys)
    assert rc == 0, err
    best, fields = log_lines(out)["b__p1"]
    assert fields["iters"] == str(2 * -(-kept // 6))  # epochs × ⌈pseudo images / 6⌉: the pseudo loader defines L
    assert fields["metric"] == "fine_grained" and fields["val"] == "valtiny_seed1" and np.isfinite(best)
    config = json.loads((out / "b__p1_cfg.json").read_text())
    assert config["precision"] == "bf16" and config["pseudo_images"] == kept
    assert {"train/loss", "train/weighted_loss", "train/disagree", "train/current_win", "train/avg_weights",
            "train/gamma1", "train/gamma2", "train/accuracy", "train/lr", "val/accuracy",
            "val/fine_grained"} <= tb_tags(out / "tb" / "b__p1")
    assert not (out / "b__p1.resume.pt").exists()

    # finished runs are skipped at once, without touching the data (here: a missing dataset)
    stamp = (out / "b__p1.pt").stat().st_mtime_ns
    for main, argv in ((main_fs.main, base), (main_dmt.main, dmt)):
        argv = [a if a != str(cifar) else str(tmp_path / "gone") for a in argv]
        rc, stdout, _ = run(main, argv, capsys)
        assert rc == 0 and "already finished" in stdout
    assert (out / "b__p1.pt").stat().st_mtime_ns == stamp
    assert [n for n in log_lines(out) if n.startswith("b__")] == ["b__p0", "b__p0--test", "b__p1"]


def test_interrupted_dmt_run_resumes_to_the_same_weights(cifar, labeller, tmp_path, capsys, monkeypatch):
    pseudo = tmp_path / "pseudo"
    assert run(main_dmt.main, common(cifar, tmp_path, "--labeling", "--train-set", SPLIT, "--label-ratio", "1",
                                     "--continue-from", str(labeller), "--pseudo-dir", str(pseudo)), capsys)[0] == 0

    def argv(name):
        return common(cifar, tmp_path, "--exp-name", name, "--train-set", SPLIT, "--pseudo-dir", str(pseudo),
                      "--batch-size-labeled", "4", "--batch-size-pseudo", "10", "--epochs", "2", "--gamma1", "4",
                      "--gamma2", "4", "--val-num-steps", "100", "--resume-every", "1", "--deterministic")

    assert run(main_dmt.main, argv("straight"), capsys)[0] == 0

    class DyingCostMeter(trainer.CostMeter):  # Ctrl-C during iteration 4, before its resume checkpoint
        def add(self, images):
            super().add(images)
            if self.images > 3 * 14:  # 14 images per iteration (10 pseudo + 4 labelled)
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "CostMeter", DyingCostMeter)
    assert run(main_dmt.main, argv("resumed"), capsys)[0] == 130
    assert (tmp_path / "resumed.resume.pt").exists() and "resumed" not in log_lines(tmp_path)
    monkeypatch.undo()
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")
    rc, _, err = run(main_dmt.main, argv("resumed"), capsys)
    assert rc == 0 and "resuming at iteration 3/6" in err
    for suffix in (".pt", "--ema.pt"):
        a = torch.load(tmp_path / f"straight{suffix}", weights_only=False)["model"]
        b = torch.load(tmp_path / f"resumed{suffix}", weights_only=False)["model"]
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert log_lines(tmp_path)["resumed"][0] == log_lines(tmp_path)["straight"][0]


# ----------------------------------------------------------------------------------- bad input
BAD_INPUTS = {
    "dataset folder missing": (main_fs.main, ["--data-root", "NOWHERE", "--train-set", f"{SPLIT}_labeled"], "NOWHERE"),
    "training file missing": (main_fs.main, ["--train-set", "7_seed1_labeled"], "7_seed1_labeled"),
    "test without weights": (main_fs.main, ["--state", "2"], "--continue-from"),
    "checkpoint not a checkpoint": (main_fs.main, ["--state", "2", "--continue-from", "GARBAGE"], "GARBAGE"),
    "labelling without weights": (main_dmt.main, ["--labeling", "--train-set", SPLIT], "--continue-from"),
    "bad ratio": (main_dmt.main, ["--labeling", "--label-ratio", "0", "--continue-from", "GARBAGE"], "--label-ratio"),
    "pseudo file missing": (main_dmt.main, ["--train-set", SPLIT, "--pseudo-dir", "NOWHERE"], f"{SPLIT}_pseudo"),
    "bad alpha": (main_dmt.main, ["--train-set", SPLIT, "--alpha", "-0.5"], "--alpha"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case, cifar, tmp_path, capsys):
    main, extra, expected = BAD_INPUTS[case]
    (tmp_path / "GARBAGE").write_bytes(b"\x00garbage")
    extra = [str(tmp_path / a) if a in ("NOWHERE", "GARBAGE") else a for a in extra]
    out = tmp_path / "out"
    rc, _, err = run(main, common(cifar, out, "--exp-name", "bad", "--epochs", "1", *extra), capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not (out / "bad.done.json").exists() and not (out / "log.txt").exists()


def test_cli_exit_status_and_one_line_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "classification.main_dmt", "--labeling", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--continue-from" in proc.stderr


# ------------------------------------------------------------------------------------ torchrun
def test_torchrun_labelling_pools_the_threshold(cifar, labeller, tmp_path):
    """Each of 2 ranks labels half of the images; k is chosen on the pooled confidences; rank 0
    writes the rows in file order: the file equals the single-process numpy reference."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DMT_NO_PROGRESS": "1"}
    pseudo = tmp_path / "pseudo"
    argv = common(cifar, tmp_path, "--labeling", "--train-set", SPLIT, "--continue-from", str(labeller),
                  "--label-ratio", "0.5", "--batch-size-labeled", "4", "--pseudo-dir", str(pseudo))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "classification.main_dmt", *argv],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert check_pseudo_file(cifar, pseudo / f"{SPLIT}_pseudo", labeller, 0.5) == 13
    assert proc.stdout.count("kept 13 ") == 1  # rank 0 reports (and writes)
