"""The four CIFAR-10 experiment scripts end to end on a tiny synthetic CIFAR-10 (docs/method.md §1.2, §7.3).

cl-c10-4000 and dmt-c10-4000 run in full (phase 0 + 5 phases + the tests of every phase's EMA);
the 1,000-label scripts run at the tiniest scale (one phase, r = 1), and dmt-c10-1000 reuses the
phase-0 model of cl-c10-1000. Two scripts run at a time (the CI machine has 2 cores).
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from classification import generate_splits
from classification.cifar import read_pseudo
from data.synthetic import make_cifar10
from utils.report import PHASE_TAG, RUN_NAME
from utils.run_log import parse_log_line

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SIZES = {"4000": 2, "1000": 1}  # labelled images per class standing in for 400 / 100
UNLABELLED = {"4000": 30, "1000": 40}  # 8 per class - 3 valtiny - labelled, × 10 classes
TINY = {"DEVICE": "cpu", "WORKERS": "0", "BASE_EPOCHS": "1", "BASE_BATCH": "10", "PHASE_EPOCHS": "1",
        "BATCH_PSEUDO": "16", "BATCH_LABELED": "4", "LABEL_BATCH": "32", "PHASE_VAL": "2",
        "DMT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    make_cifar10(root, num_train_per_class=8, num_test_per_class=2)
    generate_splits.main(["--root", str(root), "--sizes", *map(str, SIZES.values()), "--seeds", "1",
                          "--val-size", "3"])
    return root


def run_script(name: str, data_root: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    labels = name.rsplit("-", 1)[1].removesuffix(".sh")
    full_env = {**os.environ, **TINY, "DATA_ROOT": str(data_root), "OUT": str(out),
                "LABELS_PER_CLASS": str(SIZES[labels]), "PYTHON": sys.executable, **env}
    proc = subprocess.run(["bash", str(REPO / "classification" / name), "1"], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, f"{name}: {proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def log_lines(out: Path) -> list[tuple[str, float, dict[str, str]]]:
    return [parse_log_line(line) for line in (out / "log.txt").read_text().splitlines()]


def check_experiment(out: Path, experiment: str, phases: int, trained_p0: bool) -> dict[str, dict[str, str]]:
    """One log.txt line per run, named as utils.report expects; the --test lines hold test accuracies."""
    lines = log_lines(out)
    names = [name for name, _, _ in lines]
    expected = [f"{experiment}-1__p{k}" for k in range(0 if trained_p0 else 1, phases + 1)]
    expected += [f"{experiment}-1__p{k}--test" for k in range(phases + 1)]
    assert names == expected
    for name, value, fields in lines:
        match = RUN_NAME.match(name)
        assert match and match["experiment"] == experiment and match["run"] == "1" and PHASE_TAG.match(match["tag"])
        if name.endswith("--test"):
            assert fields["set"] == "test" and float(fields["accuracy"]) == value
        else:
            assert (out / f"{name}--ema.pt").is_file() and (out / f"{name}.pt").is_file()
            assert not (out / f"{name}.resume.pt").exists()
    return {name: fields for name, _, fields in lines}


def check_pseudo_file(out: Path, data_root: Path, labels: str, ratio: float) -> None:
    """The last phase's pickle round-trips: raw rows of the unlabelled file with their softmax."""
    split = f"{SIZES[labels]}_seed1"
    with open(out / "pseudo" / f"{split}_pseudo", "rb") as f:
        entry = pickle.load(f)
    with open(data_root / "cifar-10-batches-py" / f"{split}_unlabeled", "rb") as f:
        unlabelled = pickle.load(f)["data"]
    assert entry["data"].dtype == np.uint8 and entry["labels"].dtype == np.float32
    assert {row.tobytes() for row in entry["data"]} <= {row.tobytes() for row in unlabelled}
    np.testing.assert_allclose(entry["labels"].sum(axis=1), 1, atol=1e-5)
    n = UNLABELLED[labels]
    assert len(entry["data"]) == (n if ratio >= 1 else int(ratio * n) - 2)
    again = read_pseudo(out / "pseudo" / f"{split}_pseudo")
    np.testing.assert_array_equal(again.data, entry["data"])
    np.testing.assert_array_equal(again.targets, entry["labels"])
    record = json.loads((out / "pseudo" / f"{split}_pseudo.json").read_text())
    assert record["key"]["label_ratio"] == ratio


def test_the_four_scripts_end_to_end(data_root, tmp_path):
    outs = {name: tmp_path / name for name in ("cl4", "dmt4", "cl1", "dmt1")}
    cl1_done = threading.Event()
    errors: list[BaseException] = []

    def stream_a():  # cl-c10-4000 in full, then dmt-c10-1000 reusing cl-c10-1000's phase 0
        run_script("cl-c10-4000.sh", data_root, outs["cl4"], AMP="0")
        cl1_done.wait(timeout=600)
        run_script("dmt-c10-1000.sh", data_root, outs["dmt1"], AMP="0", RATIOS="1.0", CL_OUT=str(outs["cl1"]))

    def stream_b():  # cl-c10-1000 at the tiniest scale, then dmt-c10-4000 in full with its own phase 0
        try:
            run_script("cl-c10-1000.sh", data_root, outs["cl1"], AMP="0", RATIOS="1.0")
        finally:
            cl1_done.set()
        run_script("dmt-c10-4000.sh", data_root, outs["dmt4"], CL_OUT=str(tmp_path / "no-cl-run"))

    def guarded(fn):
        def wrapped():
            try:
                fn()
            except BaseException as exc:  # re-raised in the main thread
                errors.append(exc)
        return wrapped

    threads = [threading.Thread(target=guarded(fn)) for fn in (stream_a, stream_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]

    cl4 = check_experiment(outs["cl4"], "cl-c10-4000", 5, trained_p0=True)
    check_pseudo_file(outs["cl4"], data_root, "4000", 1.0)
    for k, seed in zip(range(1, 6), range(6, 11)):
        config = json.loads((outs["cl4"] / f"cl-c10-4000-1__p{k}_cfg.json").read_text())
        assert config["seed"] == seed and config["gamma1"] == config["gamma2"] == 0
        assert config["ema_decay"] == 0.001 and config["valtiny"] and config["fine_grain"]
        assert (config["batch_size_pseudo"], config["batch_size_labeled"]) == (16, 4)
        assert config["precision"] == "fp32"
    assert cl4["cl-c10-4000-1__p1"]["val"] == "valtiny_seed1" and cl4["cl-c10-4000-1__p0"]["val"] == "test"

    check_experiment(outs["dmt4"], "dmt-c10-4000", 5, trained_p0=True)
    config = json.loads((outs["dmt4"] / "dmt-c10-4000-1__p3_cfg.json").read_text())
    assert config["gamma1"] == config["gamma2"] == 4 and config["precision"] == "fp32" and config["seed"] == 8  # AMP unset: 0 on CPU

    check_experiment(outs["cl1"], "cl-c10-1000", 1, trained_p0=True)
    check_pseudo_file(outs["cl1"], data_root, "1000", 1.0)
    check_experiment(outs["dmt1"], "dmt-c10-1000", 1, trained_p0=False)
    reused = outs["dmt1"] / "dmt-c10-1000-1__p0--ema.pt"
    assert reused.read_bytes() == (outs["cl1"] / "cl-c10-1000-1__p0--ema.pt").read_bytes()
    assert (outs["dmt1"] / "dmt-c10-1000-1__p0.adopted").is_file()

    # rerunning a finished script redoes nothing and adds no line
    before = (outs["cl1"] / "log.txt").read_text()
    proc = run_script("cl-c10-1000.sh", data_root, outs["cl1"], AMP="0", RATIOS="1.0")
    assert proc.stdout.count("already finished") == 4 and "labelled" not in proc.stdout
    assert (outs["cl1"] / "log.txt").read_text() == before


def test_bad_seed_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "classification" / "cl-c10-4000.sh"), "one"], capture_output=True,
                          text=True, env={**os.environ, "OUT": str(tmp_path)}, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "seed 'one'" in proc.stderr
