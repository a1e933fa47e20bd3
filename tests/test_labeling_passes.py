"""Segmentation labelling passes (docs/method.md §2.1) on a tiny synthetic VOC set: one forward pass
with the (label, confidence) cache writes the same bytes as the two-pass labeller (memory and
scratch-file cache, fp32 and autocast), the ground-truth diagnostics equal an independent numpy
computation from the written files and the GT PNGs and change no file, TensorBoard's reader finds
the labeling/ scalars and images, incomplete folders are relabelled, failures leave nothing behind,
and a torchrun rank with an empty shard labels nothing and still finishes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segmentation.label_cache as label_cache
import segmentation.label_pass as label_pass
from segmentation.run_config import RunConfig
from segmentation.options import parse_args
from tests.test_seg_main import (NUM_CLASSES, REPO, common, fail_pseudo_label_save, labeller,  # noqa: F401
                                 reference_predictions, run, unlabelled_ids, voc)
from segmentation.generate_splits import id_list_text


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")


def label_argv(voc: Path, out: Path, labeller: Path, pseudo: Path, *extra: str, name: str = "lab") -> list[str]:
    return common(voc, out, "--state", "1", "--labeling", "--exp-name", name, "--continue-from", str(labeller),
                  "--label-ratio", "0.5", "--batch-size-labeled", "4", "--pseudo-dir", str(pseudo), *extra)


def npy_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.npy"))}


def record(folder: Path) -> dict:
    return json.loads((folder / "labeling.json").read_text())


# ------------------------------------------------------------------------ one pass = two passes
@pytest.mark.parametrize("amp", [[], ["--mixed-precision"]], ids=["fp32", "autocast"])
def test_one_pass_writes_the_bytes_of_two_passes(voc, labeller, tmp_path, capsys, monkeypatch, amp):
    forwards = []
    real = label_pass.predict

    def counting_predict(model, images, round_fp16):
        forwards.append(images.shape[0])
        return real(model, images, round_fp16)

    monkeypatch.setattr(label_pass, "predict", counting_predict)
    folders = {}
    for name, extra in {"two": ["--label-cache-gb", "0"], "memory": [],
                        "disk": ["--label-cache-gb", "1e-9"]}.items():  # 1 byte: every image spills
        forwards.clear()
        folders[name] = tmp_path / name
        rc, _, err = run(label_argv(voc, tmp_path, labeller, folders[name], *amp, *extra, name=name), capsys)
        assert rc == 0, err
        images = len(unlabelled_ids(voc))
        assert sum(forwards) == (2 if name == "two" else 1) * images, name
        assert record(folders[name])["forward_passes"] == (2 if name == "two" else 1)
        assert (record(folders[name])["cache_spilled_bytes"] > 0) == (name == "disk")
        assert not list(folders[name].glob(".label-cache*"))  # the scratch file is gone
    reference = npy_bytes(folders["two"])
    assert len(reference) == len(unlabelled_ids(voc))
    for name in ("memory", "disk"):
        assert npy_bytes(folders[name]) == reference, name
        assert record(folders[name])["thresholds"] == record(folders["two"])["thresholds"]
        assert record(folders[name])["diagnostics"] == record(folders["two"])["diagnostics"]
    if amp:  # stored confidences are fp16-rounded under autocast
        conf = np.concatenate([np.load(folders["memory"] / n)[..., 1].ravel() for n in reference])
        np.testing.assert_array_equal(conf.astype(np.float16).astype(np.float32), conf)


def test_cache_keeps_fp16_and_spills_beyond_its_budget(tmp_path):
    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    conf = (np.arange(12, dtype=np.float16) / 16).reshape(3, 4)
    cache = label_cache.LabelCache(budget=label.nbytes + conf.nbytes, scratch=tmp_path / "scratch.bin")
    cache.put("a", (label, conf))
    cache.put("b", (label[:, :3] + 1, conf[:, :3]))  # over budget: to the scratch file
    cache.put("c", (label[:2], conf[:2] * 2))
    assert cache.used == 36 and cache.spilled == 16 + 24 + 8 + 16  # 9 B + 18 B, 8 B + 16 B, 8-byte aligned
    for key, (lab, cf) in {"a": (label, conf), "b": (label[:, :3] + 1, conf[:, :3]),
                           "c": (label[:2], conf[:2] * 2)}.items():
        got = cache.get(key)
        assert got[0].dtype == np.uint8 and got[1].dtype == np.float16
        np.testing.assert_array_equal(got[0], lab)
        np.testing.assert_array_equal(got[1], cf)
    assert (tmp_path / "scratch.bin").is_file()
    cache.close()
    assert not (tmp_path / "scratch.bin").exists()


def test_default_budget_is_a_quarter_of_available_memory(monkeypatch):
    monkeypatch.setattr(label_cache, "mem_available_bytes", lambda: 8 * 2**30)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert label_cache.cache_budget_bytes(None) == 2 * 2**30
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert label_cache.cache_budget_bytes(None) == 2**29
    assert label_cache.cache_budget_bytes(0) == 0 and label_cache.cache_budget_bytes(1.5) == 3 * 2**29


# ------------------------------------------------------------------------ ground-truth diagnostics
def numpy_quality(voc: Path, folder: Path, ids: list[str]) -> dict:
    """Accuracy, per-class precision/recall and mIoU of the kept labels, from the files and GT PNGs."""
    correct = kept_valid = 0
    tp = np.zeros(NUM_CLASSES)
    labelled_as = np.zeros(NUM_CLASSES)
    truth = np.zeros(NUM_CLASSES)
    truth_kept = np.zeros(NUM_CLASSES)
    for sample_id in ids:
        pseudo = np.load(folder / f"{sample_id}.npy")[..., 0].astype(np.int64)
        gt = np.array(Image.open(voc / "SegmentationClassAug" / f"{sample_id}.png")).astype(np.int64)
        valid = gt < NUM_CLASSES
        kept = (pseudo != 255) & valid
        correct += int(((pseudo == gt) & kept).sum())
        kept_valid += int(kept.sum())
        for c in range(NUM_CLASSES):
            tp[c] += ((pseudo == c) & (gt == c) & kept).sum()
            labelled_as[c] += ((pseudo == c) & kept).sum()
            truth[c] += ((gt == c) & valid).sum()
            truth_kept[c] += ((gt == c) & kept).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        union = labelled_as + truth_kept - tp
        return {"accuracy": correct / kept_valid * 100, "precision": tp / labelled_as * 100,
                "recall": tp / truth * 100, "miou": np.nanmean(np.where(union > 0, tp / union, np.nan)) * 100,
                "gt_count": int(truth.sum()), "kept_gt_count": kept_valid}


def as_array(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def test_diagnostics_equal_numpy_and_change_no_file(voc, labeller, tmp_path, capsys):
    on, off = tmp_path / "on", tmp_path / "off"
    rc, out, err = run(label_argv(voc, tmp_path, labeller, on), capsys)
    assert rc == 0, err
    rc, _, err = run(label_argv(voc, tmp_path, labeller, off, "--no-gt-diagnostics", name="off"), capsys)
    assert rc == 0, err
    assert npy_bytes(on) == npy_bytes(off)  # the ground truth never reaches the files
    assert record(off)["diagnostics"] is None and record(off)["gt_diagnostics"] is False
    diag = record(on)["diagnostics"]
    ids = unlabelled_ids(voc)
    expected = numpy_quality(voc, on, ids)
    assert 0 < expected["kept_gt_count"] < expected["gt_count"]
    assert diag["gt_count"] == expected["gt_count"] and diag["kept_gt_count"] == expected["kept_gt_count"]
    assert diag["accuracy"] == pytest.approx(expected["accuracy"], rel=1e-12)
    np.testing.assert_allclose(as_array(diag["precision"]), expected["precision"], rtol=1e-12)
    np.testing.assert_allclose(as_array(diag["recall"]), expected["recall"], rtol=1e-12)
    assert diag["miou"] == pytest.approx(expected["miou"], rel=1e-12)
    # the teacher's figures use the argmax before thresholding: the reference model's, one image at a time
    reference = reference_predictions(voc, labeller, ids)
    right = total = 0
    for sample_id, (_, label, _) in reference.items():
        gt = np.array(Image.open(voc / "SegmentationClassAug" / f"{sample_id}.png"))
        valid = gt < NUM_CLASSES
        right, total = right + int(((label == gt) & valid).sum()), total + int(valid.sum())
    assert diag["teacher_accuracy"] == pytest.approx(right / total * 100, abs=0.5)
    assert f"{diag['accuracy']:.2f}% right" in out


def test_missing_ground_truth_turns_diagnostics_off_with_one_note(voc, labeller, tmp_path, capsys):
    import shutil
    root = tmp_path / "VOC2012"
    shutil.copytree(voc, root)
    (root / "SegmentationClassAug" / f"{unlabelled_ids(voc)[3]}.png").unlink()
    pseudo = tmp_path / "pseudo"
    rc, _, err = run(label_argv(root, tmp_path, labeller, pseudo), capsys)
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "no ground truth" in notes[0] and "diagnostics are off" in notes[0]
    assert record(pseudo)["diagnostics"] is None and len(list(pseudo.glob("*.npy"))) == 12


def test_tensorboard_reader_finds_labeling_scalars_and_images_by_phase(voc, labeller, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    name = "exp-1__p0--b-for-exp-1__p2--a"
    rc, _, err = run(label_argv(voc, tmp_path, labeller, tmp_path / "pseudo", name=name), capsys)
    assert rc == 0, err
    acc = EventAccumulator(str(tmp_path / "tb" / "exp-1__labeling--a"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars, images = set(acc.Tags()["scalars"]), set(acc.Tags()["images"])
    assert {"labeling/kept_fraction", "labeling/accuracy", "labeling/miou", "labeling/teacher_miou",
            "labeling/teacher_accuracy", "labeling/precision/00", "labeling/recall/00"} <= scalars
    assert [e.step for e in acc.Scalars("labeling/accuracy")] == [2]
    assert acc.Scalars("labeling/accuracy")[0].value == pytest.approx(record(tmp_path / "pseudo")["diagnostics"]["accuracy"])
    assert images == {f"labeling/sample_{i}" for i in range(4)}
    event = acc.Images("labeling/sample_0")[0]
    first = unlabelled_ids(voc)[0]
    h, w = np.load(tmp_path / "pseudo" / f"{first}.npy").shape[:2]
    assert event.step == 2 and (event.height, event.width) == (h, 3 * w + 4)  # image | pseudo | GT
    assert record(tmp_path / "pseudo")["phase"] == 2


def test_phase_from_run_names():
    from utils.label_quality import series
    assert series("E-1__p0--b-for-E-1__p3--a", "runs/E-1__p0--b.pt", None) == ("E-1__labeling--a", 3)
    assert series("1700000000", "out/dmt-c10-1000-1__p2--ema.pt", None) == ("dmt-c10-1000-1__labeling", 3)
    assert series("lab", "labeller.pt", None) == ("lab", None)
    assert series("lab", "labeller.pt", 4) == ("lab", 4)
    assert series("E-1__p0--b-for-E-1__p3--a", None, 7) == ("E-1__labeling--a", 7)


# ------------------------------------------------------------------------ completeness and failures
def corrupt_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-8:] = b"\xff" * 8
    path.write_bytes(bytes(data))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a rewrite moves the mtime


@pytest.mark.parametrize("damage", ["deleted", "truncated", "rewritten", "extra file", "record of fewer"])
def test_a_folder_that_does_not_match_its_record_is_relabelled(voc, labeller, tmp_path, capsys, damage):
    pseudo = tmp_path / "pseudo"
    argv = label_argv(voc, tmp_path, labeller, pseudo, "--no-gt-diagnostics")
    assert run(argv, capsys)[0] == 0
    args = parse_args(argv)
    assert RunConfig.from_args(args).done.is_done()
    before = npy_bytes(pseudo)
    victim = sorted(pseudo.glob("*.npy"))[2]
    if damage == "deleted":
        victim.unlink()
    elif damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:100])
    elif damage == "rewritten":
        corrupt_bytes(victim)
    elif damage == "extra file":
        np.save(pseudo / "stranger.npy", np.zeros((2, 2, 2), dtype=np.float32))
    else:
        rec = record(pseudo)
        rec["files"].pop(victim.stem)
        (pseudo / "labeling.json").write_text(json.dumps(rec))
    assert not RunConfig.from_args(args).done.is_done()
    rc, out, err = run(argv, capsys)
    assert rc == 0 and "already labelled" not in out and "labelled 12 images" in out, err
    assert npy_bytes(pseudo) == before and RunConfig.from_args(args).done.is_done()


@pytest.mark.parametrize("error", [OSError("disk full, no errno"), OSError(28, "No space left on device"),
                                   RuntimeError("writer died")], ids=["oserror-no-errno", "enospc", "runtime"])
def test_a_failed_pass_removes_its_partial_folder_and_ends_in_one_line(voc, labeller, tmp_path, capsys,
                                                                        monkeypatch, error):
    pseudo = tmp_path / "pseudo"
    fail_pseudo_label_save(monkeypatch, error, at=5)
    rc, out, err = run(label_argv(voc, tmp_path, labeller, pseudo), capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(pseudo) in lines[0]
    assert not pseudo.exists() and not pseudo.with_name("pseudo.partial").exists()


def test_negative_cache_budget_is_one_line(voc, labeller, tmp_path, capsys):
    rc, _, err = run(label_argv(voc, tmp_path, labeller, tmp_path / "p", "--label-cache-gb", "-1"), capsys)
    assert rc == 2 and err.strip().splitlines() == [err.strip()] and "--label-cache-gb" in err


def test_fp16_labelling_stores_fp16_rounded_confidences(voc, labeller, tmp_path, capsys):
    """``--mixed-precision --amp-dtype fp16`` on CPU (fp16 autocast on every device, issue 12)."""
    pseudo = tmp_path / "pseudo"
    rc, _, err = run(label_argv(voc, tmp_path, labeller, pseudo, "--mixed-precision", "--amp-dtype", "fp16"), capsys)
    if rc == 2 and "needs a GPU" in err:
        pytest.skip("this checkout refuses fp16 autocast on CPU (utils/amp.py)")
    assert rc == 0, err
    assert record(pseudo)["precision"] == "fp16"
    conf = np.concatenate([np.load(p)[..., 1].ravel() for p in pseudo.glob("*.npy")])
    assert conf.dtype == np.float32 and 0 < conf.min() and conf.max() <= 1
    np.testing.assert_array_equal(conf.astype(np.float16).astype(np.float32), conf)
    # and the one-pass fp16 cache gives the two-pass bytes
    two = tmp_path / "two"
    rc, _, err = run(label_argv(voc, tmp_path, labeller, two, "--mixed-precision", "--amp-dtype", "fp16",
                                "--label-cache-gb", "0", name="two"), capsys)
    assert rc == 0, err
    assert npy_bytes(two) == npy_bytes(pseudo)


def test_empty_shard_under_torchrun(voc, labeller, tmp_path):
    """2 processes, 1 unlabelled image: rank 1 has nothing to label and still pools the thresholds."""
    import shutil
    root = tmp_path / "VOC2012"
    shutil.copytree(voc, root)
    one = unlabelled_ids(voc)[:1]
    (root / "ImageSets" / "Segmentation" / "20_unlabeled_0.txt").write_text(id_list_text(one))
    pseudo = tmp_path / "pseudo"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DMT_NO_PROGRESS": "1"}
    argv = label_argv(root, tmp_path, labeller, pseudo)
    argv[argv.index("--batch-size-labeled") + 1] = "2"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "segmentation.main", *argv], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.stem for p in pseudo.glob("*.npy")] == one
    rec = record(pseudo)
    assert rec["images"] == 1 and rec["diagnostics"]["gt_count"] > 0
    torch_free = np.load(pseudo / f"{one[0]}.npy")
    assert torch_free.shape[-1] == 2


def test_the_phase_run_logs_its_pseudo_label_quality(voc, labeller, tmp_path, capsys):
    from tests.test_seg_main import log_lines
    pseudo = tmp_path / "pseudo"
    assert run(label_argv(voc, tmp_path, labeller, pseudo), capsys)[0] == 0
    rc, _, err = run(common(voc, tmp_path, "--state", "1", "--exp-name", "dmt", "--continue-from", str(labeller),
                            "--pseudo-dir", str(pseudo), "--epochs", "1", "--gamma1", "5", "--gamma2", "5",
                            "--val-num-steps", "5"), capsys)
    assert rc == 0, err
    _, fields = log_lines(tmp_path)["dmt"]
    rec = record(pseudo)
    assert float(fields["pseudo_kept"]) == pytest.approx(rec["kept_fraction"], abs=1e-4)
    assert float(fields["pseudo_acc"]) == pytest.approx(rec["diagnostics"]["accuracy"], abs=1e-4)
    assert float(fields["teacher_miou"]) == pytest.approx(rec["diagnostics"]["teacher_miou"], abs=1e-4)


def test_cityscapes_ids_with_folders_one_pass_diagnostics_and_completeness(tmp_path, capsys):
    """Cityscapes ids are ``<city>/<name>``: files in city folders, all counted by the record; the
    labels are at the 32×64 test size, compared with the train-id ground truth resized to it."""
    from data.synthetic import make_cityscapes
    from segmentation.cityscapes_lists import list_split
    from segmentation.models import deeplab_v2
    from utils.checkpoint import save_checkpoint
    city = make_cityscapes(tmp_path / "city", num_train=6, num_val=1, size=(32, 64), seed=0)
    (city / "data_lists").mkdir()
    train = list_split(city, "train")
    (city / "data_lists" / "8_unlabeled_0.txt").write_text(id_list_text(train))
    torch.manual_seed(0)
    ckpt = tmp_path / "city.pt"
    save_checkpoint(ckpt, model=deeplab_v2(19, "mobilenet_v3_large", pretrained=None))

    def argv(pseudo: Path, *extra: str) -> list[str]:
        return ["--dataset", "city", "--data-root", str(city), "--out-dir", str(tmp_path), "--backbone",
                "mobilenet_v3_large", "--test-size", "32", "64", "--device", "cpu", "--workers", "0", "--train-set",
                "8", "--sets-id", "0", "--state", "1", "--labeling", "--exp-name", pseudo.name, "--continue-from",
                str(ckpt), "--label-ratio", "0.5", "--batch-size-labeled", "2", "--pseudo-dir", str(pseudo), *extra]

    one, two = tmp_path / "one", tmp_path / "two"
    assert run(argv(one), capsys)[0] == 0
    assert run(argv(two, "--label-cache-gb", "0"), capsys)[0] == 0
    files = {p.relative_to(one).as_posix(): p.read_bytes() for p in sorted(one.rglob("*.npy"))}
    assert sorted(files) == sorted(f"{i}.npy" for i in train)
    assert files == {p.relative_to(two).as_posix(): p.read_bytes() for p in sorted(two.rglob("*.npy"))}
    rec = record(one)
    assert rec["diagnostics"]["gt_count"] > 0 and np.load(one / f"{train[0]}.npy").shape == (32, 64, 2)
    args = parse_args(argv(one))
    assert RunConfig.from_args(args).done.is_done()
    (one / f"{train[1]}.npy").unlink()
    assert not RunConfig.from_args(args).done.is_done()


def test_label_pass_under_fp16_autocast_stores_fp16_rounded_confidences(labeller, tmp_path):
    """fp16 autocast on the CPU, whatever utils/amp.py lets the flags pick: the stored confidences
    are fp16 values, and the one-pass fp16 cache writes the two-pass bytes."""
    from segmentation.models import deeplab_v2
    from utils.amp import Precision
    model = deeplab_v2(NUM_CLASSES, "mobilenet_v3_large", pretrained=None)
    model.load_state_dict(torch.load(labeller, weights_only=False)["model"])
    model.eval()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 41, 41, generator=g), None, [f"b{b}_{i}" for i in range(2)], [(37, 30), (41, 41)])
               for b in range(2)]
    precision = Precision("fp16", torch.device("cpu"))
    folders = {}
    for name, cache in (("one", 2**30), ("two", 0)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        result = label_pass.label_pass(model, batches, torch.device("cpu"), precision, torch.contiguous_format,
                                     NUM_CLASSES, 0.5, 16, folders[name], cache)
        assert result.passes == (1 if cache else 2) and 0 < result.kept < result.total
    assert npy_bytes(folders["one"]) == npy_bytes(folders["two"]) and len(npy_bytes(folders["one"])) == 4
    arr = np.load(folders["one"] / "b0_0.npy")
    assert arr.shape == (37, 30, 2) and arr.dtype == np.float32
    conf = arr[..., 1]
    np.testing.assert_array_equal(conf.astype(np.float16).astype(np.float32), conf)
    assert len(np.unique(conf)) > 10  # real, varied confidences
