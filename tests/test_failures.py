"""A user's mistake or a full machine ends with one line and exit 2, nothing half-written: a full
disk (torch.save's RuntimeError, OSError ENOSPC; on /dev/full and on a real tiny tmpfs where this
machine allows mounting one), a read-only output folder (every program), bad flag values."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from classification import main_dmt, main_fs
from segmentation import generate_splits
from segmentation.generate_splits import id_list_text
from segmentation.main import main as seg_main
from tests.helpers import cifar_with_splits, seg_main_argv, voc_with_split
from utils import checkpoint
from utils.checkpoint import save_checkpoint
from utils.errors import UserError, run_cli
from utils.io import TMP_MARKER, atomic_path, require_writable_dir, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("error: "), err
    return err


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TMP_MARKER in p.name or ".partial" in p.name]


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, ro) -> a fresh tmpfs folder (root only; the test is skipped elsewhere)."""
    mounted: list[Path] = []

    def mount(size: str = "64k", ro: bool = False) -> Path:
        folder = tmp_path / f"mnt{len(mounted)}"
        folder.mkdir()
        if not can_mount():
            pytest.skip("mounting a tmpfs needs root")
        opts = f"size={size}" + (",ro" if ro else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def readonly(tmp_path, tmpfs):
    """A folder nobody can write to: a read-only tmpfs as root (root ignores permission bits),
    mode 0555 otherwise."""
    if can_mount():
        return tmpfs(ro=True)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


# ------------------------------------------------------------------------------------ writers
def test_torch_save_on_a_full_device_is_one_user_error_and_leaves_nothing(tmp_path):
    """/dev/full returns ENOSPC on every write; torch.save reports it as a RuntimeError."""
    path = tmp_path / "run.pt"
    path.write_bytes(b"previous snapshot")
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}")
    os.symlink("/dev/full", tmp)  # the writer's temporary name leads to the full device
    with pytest.raises(UserError, match=f"^{path}: writing failed .*disk is probably full"):
        save_checkpoint(path, model=torch.nn.Linear(30, 30))
    assert not os.path.lexists(tmp) and path.read_bytes() == b"previous snapshot"
    with open(tmp.with_name("x"), "w"):
        pass  # (the folder itself is still writable)


def test_oserror_enospc_and_unrelated_errors(tmp_path, monkeypatch):
    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match="no space left on device"):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
            full()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):  # a bug stays a traceback
        with atomic_path(tmp_path / "b.txt"):
            raise ValueError("bug")
    with pytest.raises(RuntimeError, match="unrelated"):
        with atomic_path(tmp_path / "c.txt"):
            raise RuntimeError("unrelated")


def test_run_cli_turns_environment_errors_into_one_line(capsys):
    def main_full(_argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/x.npy")

    def main_ro(_argv):
        raise OSError(errno.EROFS, "Read-only file system", "/data/out")

    assert run_cli(main_full, []) == 2 and "/data/out/x.npy: no space left on device" in one_line(capsys)
    assert run_cli(main_ro, []) == 2 and "/data/out: read-only file system" in one_line(capsys)
    with pytest.raises(OSError):
        run_cli(lambda _a: (_ for _ in ()).throw(OSError(errno.ENOENT, "gone")), [])


def test_require_writable_dir(tmp_path, readonly):
    assert require_writable_dir(tmp_path / "new" / "sub", "--out-dir").is_dir()
    assert list((tmp_path / "new" / "sub").iterdir()) == []  # the probe is removed
    (tmp_path / "file").write_text("x")
    for bad in (readonly, readonly / "sub", tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(UserError, match=f"^--out-dir {bad}: "):
            require_writable_dir(bad, "--out-dir")


# ---------------------------------------------------------------------------------- programs
@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return voc_with_split(tmp_path_factory.mktemp("voc-fail"), num_train=6, num_val=2, size_range=(30, 34), seed=7)


def seg_argv(voc: Path, out: Path, *extra: str) -> list[str]:
    return seg_main_argv(voc, out, "--exp-name", "r", "--epochs", "2", "--state", "2", "--batch-size-labeled", "2",
                         "--val-num-steps", "2", *extra, crop=17, test_size=35)


def assert_nothing_finished(out: Path) -> None:
    if out.is_dir():
        assert not (out / "r.done.json").exists() and not (out / "log.txt").exists() and leftovers(out) == []


def test_full_disk_during_training_monkeypatched(voc, tmp_path, capsys, monkeypatch):
    real = torch.save

    def failing(obj, f, *a, **k):
        real(obj, f, *a, **k)  # part of the file is on disk when the writer fails
        raise RuntimeError(TORCH_FULL_DISK)

    monkeypatch.setattr(checkpoint.torch, "save", failing)
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")
    out = tmp_path / "out"
    assert run_cli(seg_main, seg_argv(voc, out)) == 2
    err = one_line(capsys)
    assert f"error: {out}/r" in err and ".pt: writing failed" in err and "free disk space" in err
    assert_nothing_finished(out)
    assert not (out / "r.pt").exists()


def test_full_disk_during_training_on_a_real_tiny_file_system(voc, tmpfs, capsys, monkeypatch):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")
    out = tmpfs(size="160k")  # room for the config and TensorBoard, not for a checkpoint
    assert run_cli(seg_main, seg_argv(voc, out)) == 2
    err = one_line(capsys)
    assert f"error: {out}/r" in err and ("no space left" in err or "disk is probably full" in err), err
    assert_nothing_finished(out)


def test_read_only_output_folder_for_every_program(voc, readonly, tmp_path, capsys):
    from data import synthetic

    cifar = cifar_with_splits(tmp_path / "cifar", sizes=(1,), per_class=5, test_per_class=1, val_size=2)
    (tmp_path / "train.txt").write_text(id_list_text([f"2007_{i:06d}" for i in range(40)]))
    out = readonly / "out"
    cases = [
        (seg_main, seg_argv(voc, out), "--out-dir"),
        (seg_main, seg_argv(voc, tmp_path / "ok", "--log-dir", str(out)), "--log-dir"),
        (seg_main, seg_argv(voc, tmp_path / "ok", "--state", "1", "--labeling", "--continue-from", "x.pt",
                            "--pseudo-dir", str(out / "p")), "--pseudo-dir"),
        (main_fs.main, ["--data-root", str(cifar), "--out-dir", str(out), "--train-set", "1_seed1_labeled",
                        "--device", "cpu"], "--out-dir"),
        (main_dmt.main, ["--data-root", str(cifar), "--out-dir", str(out), "--train-set", "1_seed1",
                         "--device", "cpu"], "--out-dir"),
        (main_dmt.main, ["--data-root", str(cifar), "--out-dir", str(tmp_path / "ok"), "--train-set", "1_seed1",
                         "--labeling", "--continue-from", "x.pt", "--pseudo-dir", str(out)], "--pseudo-dir"),
        (generate_splits.main, ["--dataset", "voc", "--train-list", str(tmp_path / "train.txt"),
                                "--out-dir", str(out), "--factors", "2", "4"], str(out)),
        (synthetic.main, ["--kind", "voc", "--root", str(out), "--num-train", "2", "--num-val", "1"], str(out)),
    ]
    for main, argv, named in cases:
        assert run_cli(main, argv) == 2, (main.__module__, argv)
        err = one_line(capsys)
        assert named in err and ("read-only" in err or "permission denied" in err), (main.__module__, err)
    assert not out.exists()


BAD_SEG_FLAGS = [(["--lr", "-1"], "--lr -1"), (["--lr", "nan"], "--lr nan"), (["--lr", "0"], "--lr 0"),
                 (["--weight-decay", "-0.1"], "--weight-decay"), (["--label-ratio", "0"], "--label-ratio"),
                 (["--label-ratio", "inf"], "--label-ratio"), (["--online-threshold", "1.5"], "--online-threshold"),
                 (["--gamma1", "-1"], "--gamma1"), (["--sets-id", "-1"], "--sets-id"),
                 (["--resume-every", "-5"], "--resume-every"), (["--workers", "-1"], "--workers"),
                 (["--eval-scales", "1", "nan"], "--eval-scales")]
BAD_CLS_FLAGS = [(main_fs.main, ["--lr", "-1"], "--lr -1"), (main_fs.main, ["--weight-decay", "-1"], "--weight-decay"),
                 (main_fs.main, ["--alpha", "-0.5"], "--alpha"), (main_fs.main, ["--ema-decay", "nan"], "--ema-decay"),
                 (main_dmt.main, ["--lr", "0"], "--lr 0"), (main_dmt.main, ["--labeled-weight", "-1"], "--labeled-weight"),
                 (main_dmt.main, ["--label-ratio", "-0.2"], "--label-ratio"),
                 (main_dmt.main, ["--gamma2", "nan"], "--gamma2"), (main_dmt.main, ["--resume-every", "-1"], "--resume-every")]


@pytest.mark.parametrize("flags,named", BAD_SEG_FLAGS)
def test_bad_segmentation_flag_values(flags, named, tmp_path, capsys):
    assert run_cli(seg_main, ["--out-dir", str(tmp_path / "out"), *flags]) == 2
    err = one_line(capsys)
    assert err.startswith(f"error: {named}") and "must" in err
    assert not (tmp_path / "out").exists()  # rejected before anything was made


@pytest.mark.parametrize("main,flags,named", BAD_CLS_FLAGS)
def test_bad_classification_flag_values(main, flags, named, tmp_path, capsys):
    assert run_cli(main, ["--out-dir", str(tmp_path / "out"), *flags]) == 2
    assert one_line(capsys).startswith(f"error: {named}")
    assert not (tmp_path / "out").exists()


def test_lr_minus_one_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "segmentation.main", "--lr", "-1", "--out-dir", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == ["error: --lr -1.0: must be > 0 "
                                                                        "(the original's VOC rate is 0.002); pass a valid value"]
