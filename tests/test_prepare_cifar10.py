"""data/prepare_cifar10.py on synthetic CIFAR-10 batches and a tar.gz built here."""
from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from torchvision.datasets import CIFAR10

from data import prepare_cifar10 as pc
from data.synthetic import make_cifar10
from utils.errors import UserError, run_cli

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Synthetic batches (3 train / 1 test image per class) plus a tar.gz of them, laid out as the official one."""
    root = tmp_path / "cifar10"
    make_cifar10(root, num_train_per_class=3, num_test_per_class=1)
    with tarfile.open(root / ARCHIVE, "w:gz") as tar:
        tar.add(root / FOLDER, arcname=FOLDER)
    return root


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def synthetic_sums(root: Path, monkeypatch) -> None:
    """Pretend the synthetic files are the official ones (md5 sums computed here with hashlib)."""
    folder = root / FOLDER
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(folder / n)] for n in BATCHES[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                          "md5": md5(folder / "batches.meta")})
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(root / ARCHIVE))


def test_uses_torchvisions_official_sums():
    assert CIFAR10.tgz_md5 == "c58f30108f718f92721af3b95e74349a"
    assert dict(pc.official_files())["data_batch_1"] == "c99cafc152244af753f735de768cd75f"
    assert len(pc.official_files()) == 7  # 5 train batches, test_batch, batches.meta


def test_synthetic_batches_fail_the_md5_check_and_pass_with_no_check(root, capsys):
    (root / ARCHIVE).unlink()
    assert run_cli(pc.main, ["--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert f"data_batch_1 (md5 {md5(root / FOLDER / 'data_batch_1')}, expected c99cafc152244af753f735de768cd75f)" in err
    assert f"no {ARCHIVE} to extract" in err
    counts = pc.main(["--root", str(root), "--no-check"])
    assert counts == {**{f"data_batch_{i}": 6 for i in range(1, 6)}, "test_batch": 10}  # 30 over 5 batches, 10
    out = capsys.readouterr().out
    assert "30 training images in 5 batches, 10 test images; md5 sums not checked" in out
    assert f"next: python -m classification.generate_splits --root {root}" in out


def test_archive_md5_mismatch_names_the_file(root):
    shutil.rmtree(root / FOLDER)
    with pytest.raises(UserError, match=re.escape(f"{root / ARCHIVE}: md5 {md5(root / ARCHIVE)} is not the "
                                                  f"official c58f30108f718f92721af3b95e74349a")):
        pc.main(["--root", str(root)])
    assert not (root / FOLDER).exists()


def test_extracts_with_no_check(root):
    before = contents(root / FOLDER)
    shutil.rmtree(root / FOLDER)
    pc.main(["--root", str(root), "--no-check"])
    assert contents(root / FOLDER) == before and len(before) == 7  # 6 batches + batches.meta
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # staging folder removed


def test_verified_extraction_and_repair(root, synthetic_sums, capsys):
    before = contents(root / FOLDER)
    shutil.rmtree(root / FOLDER)
    pc.main(["--root", str(root)])
    assert "extracted cifar-10-python.tar.gz" in capsys.readouterr().out
    pc.main(["--root", str(root)])  # rerun: nothing to do
    assert "batches already in place; 30 training images" in capsys.readouterr().out
    (root / FOLDER / "data_batch_3").write_bytes(b"truncated")  # a damaged batch is restored from the archive
    pc.main(["--root", str(root)])
    assert "extracted" in capsys.readouterr().out
    assert contents(root / FOLDER) == before


def test_damaged_batch_without_archive_is_named(root):
    (root / ARCHIVE).unlink()
    (root / FOLDER / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match=r"test_batch: not a readable pickle"):
        pc.main(["--root", str(root), "--no-check"])
    (root / FOLDER / "data_batch_4").unlink()
    with pytest.raises(UserError, match=r"data_batch_4 \(missing\)"):
        pc.main(["--root", str(root), "--no-check"])


def test_bad_archive_is_a_user_error(root):
    shutil.rmtree(root / FOLDER)
    (root / ARCHIVE).write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match=r"cifar-10-python\.tar\.gz: cannot extract"):
        pc.main(["--root", str(root), "--no-check"])
    assert not (root / FOLDER).exists()
