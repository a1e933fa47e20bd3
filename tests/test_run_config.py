"""The run configurations (segmentation/run_config.py, classification/run_config.py) and the one
"already done" decision (utils/run_files.py), against values worked out by hand from the flags
(docs/method.md §5, §6.1, §8, §9)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classification.options import parse_dmt, parse_fs
from classification.run_config import RunConfig as ClsConfig
from segmentation.options import parse_args
from segmentation.run_config import RunConfig as SegConfig
from utils import run_files
from utils.run_files import PassRecord, RunFiles, file_manifest, skip_if_done

REPO = Path(__file__).resolve().parents[1]


def test_segmentation_cityscapes_dmt_config_by_hand(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    cfg = SegConfig.from_args(parse_args([
        "--dataset", "city", "--train-set", "1-l", "--sets-id", "3", "--batch-size-labeled", "2",
        "--batch-size-pseudo", "6", "--eval-protocol", "sliding", "--exp-name", "x", "--out-dir", str(tmp_path)]))
    assert cfg.task == "dmt" and cfg.num_classes == 19 and cfg.input_norm == "imagenet"
    assert cfg.crop_size == (256, 512) and cfg.test_size == (512, 1024) and cfg.image_format == "PNG"
    assert cfg.data_root == Path("datasets/cityscapes")
    # the DMS subset -l keeps its labelled list and shares the whole split's unlabelled list (§9.1)
    assert (cfg.labelled_list, cfg.unlabelled_list, cfg.val_list) == ("1-l_labeled_3", "1_unlabeled_3", "val")
    # sliding window = the training crop, stride ⌈2/3⌉ of it
    assert cfg.protocol.window == (256, 512) and cfg.protocol.stride == (171, 342)
    assert cfg.protocol.describe() == "sliding(256x512/171x342)"
    # per process: validation (2 + 6) // 4, labelling ⌈2 / 4⌉
    assert cfg.val_batch == 2 and cfg.label_batch == 1
    assert cfg.pseudo_dir == tmp_path / "pseudo" / "x" and cfg.labeling_record == tmp_path / "pseudo" / "x" / "labeling.json"
    assert cfg.files.snapshot == tmp_path / "x.pt" and cfg.files.resume == tmp_path / "x.resume.pt"
    assert cfg.files.done == tmp_path / "x.done.json" and cfg.files.tb_dir == tmp_path / "tb"
    assert cfg.done is cfg.files and cfg.writable == ((tmp_path, "--out-dir"),) and not cfg.online
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.val_batch = 3  # type: ignore[misc]


def test_segmentation_voc_labelling_config_by_hand(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    labeller = tmp_path / "m.pt"
    labeller.write_bytes(b"weights")
    pseudo = tmp_path / "p" / "lab"
    cfg = SegConfig.from_args(parse_args([
        "--state", "1", "--labeling", "--continue-from", str(labeller), "--coco", "--valtiny",
        "--pseudo-dir", str(pseudo), "--out-dir", str(tmp_path / "o"), "--log-dir", str(tmp_path / "tb"),
        "--exp-name", "e", "--batch-size-labeled", "3"]))
    assert cfg.task == "labeling" and cfg.num_classes == 21 and cfg.input_norm == "coco"
    assert cfg.crop_size == (321, 321) and cfg.test_size == (505, 505) and cfg.image_format == "JPEG"
    assert cfg.val_list == "valtiny" and cfg.label_batch == 3 and cfg.val_batch == 3 + 7
    assert cfg.files.tb_dir == tmp_path / "tb" and cfg.protocol.name == "whole"
    assert cfg.writable == ((tmp_path / "o", "--out-dir"), (tmp_path / "tb", "--log-dir"),
                            (tmp_path / "p", "--pseudo-dir (its parent folder)"))
    assert isinstance(cfg.done, PassRecord) and cfg.done.record == pseudo / "labeling.json"
    assert cfg.done.key["labeller"] == {"path": os.fspath(labeller.resolve()), "size": 7,
                                        "mtime_ns": labeller.stat().st_mtime_ns}
    assert not cfg.done.is_done()  # nothing labelled yet


def test_classification_configs_by_hand(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    folder = tmp_path / "cifar-10-batches-py"
    cfg = ClsConfig.from_args(parse_dmt([
        "--train-set", "400_seed1", "--data-root", str(tmp_path), "--pseudo-dir", str(tmp_path / "p"),
        "--valtiny", "--fine-grain", "--exp-name", "r", "--out-dir", str(tmp_path / "o"), "--log", "lg"]))
    assert cfg.task == "dmt" and cfg.folder == folder
    assert cfg.train_file == folder / "400_seed1_labeled" and cfg.unlabelled_file == folder / "400_seed1_unlabeled"
    assert cfg.pseudo_file == tmp_path / "p" / "400_seed1_pseudo"
    assert cfg.pseudo_record == tmp_path / "p" / "400_seed1_pseudo.json"
    assert (cfg.val_set, cfg.val_file, cfg.metric) == ("valtiny_seed1", folder / "valtiny_seed1", "fine_grained")
    assert cfg.eval_batch == 512 // 3 and cfg.label_batch == 64 // 3
    assert cfg.inputs == ((folder / "400_seed1_labeled", "labelled"), (tmp_path / "p" / "400_seed1_pseudo", "pseudo"),
                          (folder / "valtiny_seed1", "labelled"))
    assert cfg.files.log_file == tmp_path / "o" / "lg.txt" and cfg.done is cfg.files
    assert cfg.files.ema == tmp_path / "o" / "r--ema.pt" and cfg.files.confusion == tmp_path / "o" / "r_confusion.png"

    labelling = ClsConfig.from_args(parse_dmt(["--labeling", "--continue-from", "x.pt", "--train-set", "4_seed2",
                                               "--data-root", str(tmp_path)]))
    assert labelling.task == "labeling" and labelling.inputs == ((folder / "4_seed2_unlabeled", "labelled"),)
    assert labelling.pseudo_file == folder / "4_seed2_pseudo"  # the original's default: the CIFAR folder
    assert labelling.writable[-1] == (folder, "--pseudo-dir (default: the CIFAR folder)")

    baseline = ClsConfig.from_args(parse_fs(["--train-set", "trainval_seed1", "--data-root", str(tmp_path)]))
    assert baseline.task == "baseline" and baseline.train_file == folder / "trainval_seed1"
    assert baseline.val_set == "test" and baseline.metric == "accuracy"
    unnamed_test = ClsConfig.from_args(parse_fs(["--state", "2", "--continue-from", "x.pt"]))
    assert unnamed_test.task == "test" and unnamed_test.done is None  # appends a line every time
    named_test = ClsConfig.from_args(parse_fs(["--state", "2", "--continue-from", "x.pt", "--exp-name", "t"]))
    assert named_test.done is named_test.files


def test_pass_record_is_done_only_for_the_same_pass_and_the_same_files(tmp_path):
    folder = tmp_path / "pseudo"
    (folder / "city").mkdir(parents=True)
    for name in ("a.npy", "city/b.npy"):
        (folder / name).write_bytes(b"x" * 10)
    (folder / "notes.txt").write_text("not an output")
    manifest = file_manifest(folder, ".npy")
    stat = (folder / "a.npy").stat()
    assert manifest == {"a": [10, stat.st_mtime_ns], "city/b": [10, (folder / "city/b.npy").stat().st_mtime_ns]}
    record = folder / "labeling.json"
    record.write_text(json.dumps({"key": {"ratio": 0.2}, "files": manifest}))
    done = PassRecord(record, {"ratio": 0.2}, lambda: file_manifest(folder, ".npy"), "already labelled")
    assert done.is_done() and done.done_message(True) == "already labelled"
    assert not PassRecord(record, {"ratio": 0.4}, done.outputs, "").is_done()  # another pass
    (folder / "c.npy").write_bytes(b"")  # an extra file
    assert not done.is_done()
    (folder / "c.npy").unlink()
    os.utime(folder / "a.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a rewritten file
    assert not done.is_done()
    record.write_text("{not json")
    assert not done.is_done() and done.done_message(True) is None


def test_skip_if_done_for_runs_and_the_shell_question(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    files = RunFiles(tmp_path, "exp")
    assert not skip_if_done(files) and not skip_if_done(None)
    assert run_files.main(["done", str(tmp_path), "exp"]) == 1
    files.resume.write_bytes(b"stale")
    files.done.write_text(json.dumps({"exp_name": "exp", "best": 61.5}))
    assert skip_if_done(files)
    assert "exp: already finished" in capsys.readouterr().out
    assert not files.resume.exists()  # a finished run's resume checkpoint goes
    assert (tmp_path / "log.txt").read_text().startswith("exp: 61.5")  # the missing log line is repaired
    assert run_files.main(["done", str(tmp_path), "exp"]) == 0
    assert run_files.main(["done"]) == 2
    monkeypatch.setenv("RANK", "1")  # other ranks skip too, silently, without writing
    assert skip_if_done(files) and capsys.readouterr().out == ""


@pytest.mark.parametrize("code", [
    "from segmentation.options import parse_args; from segmentation.run_config import RunConfig; "
    "RunConfig.from_args(parse_args(['--exp-name', 'x']))",
    "from classification.options import parse_dmt; from classification.run_config import RunConfig; "
    "RunConfig.from_args(parse_dmt(['--exp-name', 'x']))"], ids=["segmentation", "classification"])
def test_building_a_config_imports_no_torch(code):
    """So that a finished step is skipped without the seconds torch's import costs."""
    out = subprocess.run([sys.executable, "-c", f"import sys; {code}; print('torch' in sys.modules)"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_stride_default_is_two_thirds_rounded_up():
    from segmentation.run_config import default_stride
    assert default_stride((321, 321)) == (math.ceil(642 / 3),) * 2 == (214, 214)
    assert default_stride((1, 2)) == (1, 2)


@pytest.mark.parametrize("argv, flag", [
    (["segmentation.main", "--loss", "bogus"], "--loss"),
    (["classification.main_dmt", "--backbone", "resnet18"], "--backbone"),
    (["classification.main_fs", "--epochs", "x"], "--epochs"),
    (["utils.report"], "LOG_OR_DIR"),
    (["utils.reproduce", "plan", "voc", "--nope"], "--nope")], ids=lambda v: v[0] if isinstance(v, list) else "")
def test_a_bad_flag_is_one_line_and_exit_2(argv, flag):
    """argparse's errors too (utils.cli.ArgumentParser): one line naming the flag, no usage dump."""
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and flag in lines[0] and lines[0].endswith("--help"), lines[0]
