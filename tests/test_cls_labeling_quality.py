"""CIFAR-10 labelling's pseudo-label quality (docs/method.md §2.2): accuracy and per-class
precision/recall of the kept images equal a numpy computation from the written pickle and the
unlabelled file's true labels, the pickle is byte-identical with --no-gt-diagnostics, TensorBoard
finds the labeling/ scalars at the phase, and a rewritten pickle is not "already labelled"."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from classification import main_dmt
from tests.test_cls_programs import (SPLIT, check_pseudo_file, cifar, common, labeller, load_pickle,  # noqa: F401
                                     reference_softmax, run, split_file)


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")


def label(cifar: Path, out: Path, labeller: Path, pseudo: Path, capsys, *extra: str):
    return run(main_dmt.main, common(cifar, out, "--labeling", "--train-set", SPLIT, "--continue-from", str(labeller),
                                     "--label-ratio", "0.5", "--batch-size-labeled", "7", "--pseudo-dir", str(pseudo),
                                     *extra), capsys)


def test_quality_equals_numpy_and_the_pickle_is_unchanged_without_it(cifar, labeller, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    on, off = tmp_path / "on", tmp_path / "off"
    # the scripts name the labeller <exp>__p<k>--ema.pt: phase k + 1
    named = tmp_path / "c10-1__p1--ema.pt"
    named.write_bytes(labeller.read_bytes())
    rc, out, err = label(cifar, tmp_path, named, on, capsys)
    assert rc == 0, err
    rc, _, err = label(cifar, tmp_path, named, off, capsys, "--no-gt-diagnostics")
    assert rc == 0, err
    pickle_name = f"{SPLIT}_pseudo"
    assert (on / pickle_name).read_bytes() == (off / pickle_name).read_bytes()
    assert json.loads((off / f"{pickle_name}.json").read_text())["diagnostics"] is None
    record = json.loads((on / f"{pickle_name}.json").read_text())
    diag = record["diagnostics"]

    kept_count = check_pseudo_file(cifar, on / pickle_name, labeller, 0.5)
    rows, truth = split_file(cifar, f"{SPLIT}_unlabeled")
    confidence = reference_softmax(labeller, rows).max(axis=1).astype(np.float32)
    keep = confidence > np.sort(confidence)[int(-0.5 * len(confidence) + 1)]
    pseudo = load_pickle(on / pickle_name)["labels"].argmax(axis=1)  # the written labels
    kept_truth = truth[keep]
    assert len(pseudo) == kept_count == diag["kept_gt_count"] and diag["gt_count"] == len(truth)
    assert diag["accuracy"] == pytest.approx((pseudo == kept_truth).mean() * 100, rel=1e-12)
    for c in range(10):
        labelled_c, true_c = pseudo == c, truth == c
        hits = int((labelled_c & (kept_truth == c)).sum())
        expected_p = None if not labelled_c.any() else hits / labelled_c.sum() * 100
        expected_r = None if not true_c.any() else hits / true_c.sum() * 100
        assert diag["precision"][c] == (pytest.approx(expected_p, rel=1e-12) if expected_p is not None else None)
        assert diag["recall"][c] == (pytest.approx(expected_r, rel=1e-12) if expected_r is not None else None)
    teacher = reference_softmax(labeller, rows).argmax(axis=1)
    assert diag["teacher_accuracy"] == pytest.approx((teacher == truth).mean() * 100, rel=1e-12)
    assert record["phase"] == 2 and f"kept images {diag['accuracy']:.2f}% right" in out

    acc = EventAccumulator(str(tmp_path / "tb" / "c10-1__labeling"))
    acc.Reload()
    expected = {"labeling/accuracy", "labeling/teacher_accuracy", "labeling/kept_fraction", "labeling/label_ratio",
                "labeling/miou", "labeling/teacher_miou"}
    expected |= {f"labeling/{key}/{c:02d}" for key in ("precision", "recall") for c in range(10)
                 if diag[key][c] is not None}
    assert set(acc.Tags()["scalars"]) == expected and any(f"labeling/precision/{c:02d}" in expected for c in range(10))
    assert [e.step for e in acc.Scalars("labeling/accuracy")] == [2]


def test_a_rewritten_pickle_is_labelled_again(cifar, labeller, tmp_path, capsys):
    pseudo = tmp_path / "pseudo"
    assert label(cifar, tmp_path, labeller, pseudo, capsys)[0] == 0
    rc, out, _ = label(cifar, tmp_path, labeller, pseudo, capsys)
    assert rc == 0 and "already labelled" in out
    path = pseudo / f"{SPLIT}_pseudo"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated: "rerun the labelling step"
    rc, out, err = label(cifar, tmp_path, labeller, pseudo, capsys)
    assert rc == 0 and "already labelled" not in out and "labelled 30 images" in out, err
    assert path.read_bytes() == good
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten in place
    rc, out, _ = label(cifar, tmp_path, labeller, pseudo, capsys)
    assert rc == 0 and "already labelled" not in out


def test_the_phase_run_logs_its_pseudo_label_quality(cifar, labeller, tmp_path, capsys):
    from tests.test_cls_programs import log_lines
    pseudo = tmp_path / "pseudo"
    assert label(cifar, tmp_path, labeller, pseudo, capsys)[0] == 0
    rc, _, err = run(main_dmt.main, common(cifar, tmp_path, "--exp-name", "b__p1", "--train-set", SPLIT, "--pseudo-dir",
                                           str(pseudo), "--batch-size-labeled", "4", "--batch-size-pseudo", "6",
                                           "--epochs", "1", "--valtiny"), capsys)
    assert rc == 0, err
    _, fields = log_lines(tmp_path)["b__p1"]
    rec = json.loads((pseudo / f"{SPLIT}_pseudo.json").read_text())
    assert float(fields["pseudo_kept"]) == pytest.approx(rec["kept"] / rec["total"], abs=1e-4)
    assert float(fields["pseudo_acc"]) == pytest.approx(rec["diagnostics"]["accuracy"], abs=1e-4)
    assert float(fields["teacher_acc"]) == pytest.approx(rec["diagnostics"]["teacher_accuracy"], abs=1e-4)
