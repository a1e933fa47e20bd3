"""The experiment scripts under torchrun (``NGPUS``, 2 and 3 gloo processes on the CPU), a kill +
resume under torchrun, and a one-line error under torchrun (issue 12).

Tiny settings as tests/test_seg_scripts.py and tests/test_cls_scripts.py, one phase (RATIOS=1.0).
The step-level equality with one process is tests/test_multi_process.py's.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cifar_with_splits, voc_with_split
from utils.run_log import parse_log_line

REPO = Path(__file__).resolve().parents[1]
BASE_ENV = {"DEVICE": "cpu", "WORKERS": "0", "AMP": "0", "OMP_NUM_THREADS": "1", "DMT_NO_PROGRESS": "1",
            "PYTHON": sys.executable}


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return voc_with_split(tmp_path_factory.mktemp("mp-voc") / "voc", sets_id=1, num_train=16, num_val=3,
                          size_range=(30, 40), seed=0)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    return cifar_with_splits(tmp_path_factory.mktemp("mp-cifar"), sizes=(1,))


def log_of(out: Path) -> dict[str, tuple[float, dict[str, str]]]:
    return {name: (best, fields) for name, best, fields in
            (parse_log_line(line) for line in (out / "log.txt").read_text().splitlines())}


def run(cmd: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env={**os.environ, **BASE_ENV, **env}, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("ngpus", [2, 3])
def test_segmentation_dmt_script_under_torchrun(voc, tmp_path, ngpus):
    """Global batches 4 (baselines) and 7 + 1 (DMT) over 2 or 3 processes: 12 pseudo images give
    steps of 7 + 1 and 5 + 1 images."""
    out = tmp_path / "out"
    proc = run(["bash", str(REPO / "segmentation" / "dmt-voc-20.sh"), "1"],
               {"NGPUS": str(ngpus), "DATA_ROOT": str(voc), "OUT": str(out), "BACKBONE": "tiny", "PRETRAINED": "none",
                "CROP": "33 33", "TEST_SIZE": "41 41", "BASE_EPOCHS": "1", "PHASE_EPOCHS": "1", "BASE_BATCH": "4",
                "RATIOS": "1.0"})
    log = log_of(out)
    exp = "dmt-voc-20-1"
    assert set(log) == {f"{exp}__p{k}--{m}" for k in range(2) for m in "ci"}
    assert log[f"{exp}__p1--c"][1]["iters"] == "2"  # ⌈12 / 7⌉: the global batch, not a per-process one
    for run_name in log:
        config = json.loads((out / f"{run_name}_cfg.json").read_text())
        assert config["world_size"] == ngpus
    assert proc.stderr.count("SyncBatchNorm needs CUDA") == 4  # one line per training run, rank 0 only
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("ngpus", [2, 3])
def test_classification_dmt_script_under_torchrun(cifar, tmp_path, ngpus):
    """Phase 0 (main_fs ... --n 1: a program flag torchrun must not parse) and one DMT phase."""
    out = tmp_path / "out"
    run(["bash", str(REPO / "classification" / "dmt-c10-1000.sh"), "1"],
        {"NGPUS": str(ngpus), "DATA_ROOT": str(cifar), "OUT": str(out), "LABELS_PER_CLASS": "1", "RATIOS": "1.0",
         "CL_OUT": str(tmp_path / "no-cl-run"), "BASE_EPOCHS": "1", "BASE_BATCH": "10", "PHASE_EPOCHS": "1",
         "BATCH_PSEUDO": "16", "BATCH_LABELED": "4", "LABEL_BATCH": "32", "PHASE_VAL": "2"})
    log = log_of(out)
    assert set(log) == {"dmt-c10-1000-1__p0", "dmt-c10-1000-1__p1", "dmt-c10-1000-1__p0--test",
                        "dmt-c10-1000-1__p1--test"}
    config = json.loads((out / "dmt-c10-1000-1__p1_cfg.json").read_text())
    assert config["world_size"] == ngpus and config["steps_per_epoch"] == 3  # ⌈40 pseudo / 16⌉
    assert (config["batch_size_pseudo"], config["batch_size_labeled"]) == (16, 4)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (torchrun starts its processes in sessions of their own, so
    killing the launcher's process group leaves them running)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def torchrun(*program: str) -> list[str]:
    return [sys.executable, "-m", "utils.torchrun", "--standalone", "--nproc_per_node=2", "--", *program]


def mixup_baseline(cifar: Path, out: Path) -> list[str]:
    """main_fs with mixup (λ and π from the RNG) for 4 epochs of 2 steps, resume checkpoints every step."""
    return torchrun("classification.main_fs", "--data-root", str(cifar), "--out-dir", str(out), "--device", "cpu",
                    "--workers", "0", "--exp-name", "fs", "--train-set", "1_seed1_labeled", "--alpha", "0.75",
                    "--batch-size", "6", "--epochs", "4", "--lr", "0.05", "--val-num-steps", "3",
                    "--ema-decay", "0.5", "--resume-every", "1", "--deterministic")


@pytest.mark.slow
def test_kill_and_resume_under_torchrun_gives_the_uninterrupted_numbers(cifar, tmp_path):
    env = {**os.environ, **BASE_ENV}
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run(mixup_baseline(cifar, whole), {})
    proc = subprocess.Popen(mixup_baseline(cifar, resumed), env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = resumed / "fs.resume.pt"
    deadline = time.monotonic() + 300
    try:
        while not checkpoint.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.05)
    finally:
        for pid in [proc.pid, *descendants(proc.pid)]:  # SIGKILL the launcher and every process at once
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    assert checkpoint.exists() and not (resumed / "log.txt").exists()
    again = run(mixup_baseline(cifar, resumed), {})
    assert "resuming at iteration" in again.stderr
    (name, (best, fields)), = log_of(whole).items()
    (name2, (best2, fields2)), = log_of(resumed).items()
    assert (name2, best2, fields2["final"], fields2["ema"]) == (name, best, fields["final"], fields["ema"])


def test_a_user_error_under_torchrun_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(torchrun("segmentation.main", "--state", "2", "--data-root", str(tmp_path / "missing"),
                                   "--out-dir", str(tmp_path / "out"), "--device", "cpu", "--exp-name", "x",
                                   "--pretrained", "none", "--backbone", "tiny", "--workers", "0"),
                          env={**os.environ, **BASE_ENV}, cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0], proc.stderr
