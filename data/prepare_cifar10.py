"""Verify (and if needed extract) CIFAR-10 against the official md5 sums (docs/method.md §5.5, §7.3).

    python -m data.prepare_cifar10 --root DIR [--download] [--no-check] [--make-splits]

``DIR`` holds ``cifar-10-python.tar.gz`` and/or the extracted ``cifar-10-batches-py/``. The md5 sums,
file names and URL are torchvision's (``torchvision.datasets.CIFAR10.tgz_md5``, ``train_list``,
``test_list``, ``meta``), checked with ``torchvision.datasets.utils.check_integrity``:

1. If ``cifar-10-batches-py/`` already holds every batch with the right md5, nothing is extracted.
2. Otherwise the archive (fetched first with ``--download``) must match md5
   c58f30108f718f92721af3b95e74349a; it is extracted into a temporary folder beside it and its files
   are renamed into ``cifar-10-batches-py/``, then checked again.
3. Every batch is then read (uint8 (N, 3072) rows, labels 0..9) and the image counts printed.

``--no-check`` skips the md5 sums (synthetic or custom batches: only presence and structure are
checked). ``--make-splits`` then runs ``classification.generate_splits --root DIR`` with its
defaults; without it the command is printed as the next step.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import zlib
from pathlib import Path
from typing import Sequence

from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import calculate_md5, check_integrity, download_url, extract_archive

from classification.cifar import read_labelled
from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import require_dir

ARCHIVE_HINT = (f"download {CIFAR10.url} into the --root folder (or pass --download), "
                f"or pass --no-check for a custom or synthetic folder")
SPLITS_MODULE = "classification.generate_splits"


def official_files() -> list[tuple[str, str]]:
    """(file name, md5) of every file of ``cifar-10-batches-py``, as torchvision lists them."""
    return [(name, md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list] + [
        (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]


def bad_files(folder: Path, verify_md5: bool) -> list[str]:
    """Names of the files that are missing, or (with ``verify_md5``) whose md5 is not the official one."""
    return [name for name, md5 in official_files()
            if not check_integrity(str(folder / name), md5 if verify_md5 else None)]


def describe_bad(folder: Path, names: Sequence[str]) -> str:
    """``"data_batch_2 (missing), test_batch (md5 abc..., expected 4035...)"``."""
    md5s = dict(official_files())
    return ", ".join(f"{name} (missing)" if not (folder / name).is_file()
                     else f"{name} (md5 {calculate_md5(str(folder / name))}, expected {md5s[name]})"
                     for name in names)


def check_archive(archive: Path, verify_md5: bool) -> None:
    if verify_md5 and not check_integrity(str(archive), CIFAR10.tgz_md5):
        raise UserError(f"{archive}: md5 {calculate_md5(str(archive))} is not the official "
                        f"{CIFAR10.tgz_md5}; download it again from {CIFAR10.url}, or pass --no-check "
                        f"for a custom archive")


def extract_batches(archive: Path, root: Path) -> None:
    """Extract ``archive`` beside it, then rename its ``cifar-10-batches-py`` files into ``root``."""
    staging = root / f".tmp-cifar10-extract-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        try:
            extract_archive(str(archive), str(staging))
        except (tarfile.TarError, EOFError, zlib.error, OSError, RuntimeError) as exc:
            raise UserError(f"{archive}: cannot extract ({' '.join(str(exc).split())}); download it again "
                            f"from {CIFAR10.url}") from None
        source = staging / CIFAR10.base_folder
        if not source.is_dir():
            raise UserError(f"{archive}: holds no {CIFAR10.base_folder}/ folder; download it again from {CIFAR10.url}")
        dest = root / CIFAR10.base_folder
        if not dest.exists():
            os.replace(source, dest)
        else:
            for path in source.iterdir():
                os.replace(path, dest / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_batches(root: Path, verify_md5: bool, download: bool) -> str:
    """Make ``root/cifar-10-batches-py`` complete (and official, with ``verify_md5``); say what was done."""
    folder = root / CIFAR10.base_folder
    bad = bad_files(folder, verify_md5)
    if not bad:
        return "batches already in place"
    archive = root / CIFAR10.filename
    if not archive.is_file() and download:
        try:
            download_url(CIFAR10.url, str(root), CIFAR10.filename, CIFAR10.tgz_md5 if verify_md5 else None)
        except (OSError, RuntimeError) as exc:
            raise UserError(f"{CIFAR10.url}: download failed ({' '.join(str(exc).split())}); fetch it by hand "
                            f"into {root}") from None
    if not archive.is_file():
        found = describe_bad(folder, bad) if folder.is_dir() else "folder not found"
        raise UserError(f"{folder}: {found}; and no {CIFAR10.filename} to extract; {ARCHIVE_HINT}")
    check_archive(archive, verify_md5)
    extract_batches(archive, root)
    bad = bad_files(folder, verify_md5)
    if bad:
        raise UserError(f"{folder}: after extracting {archive.name}: {describe_bad(folder, bad)}; "
                        f"download the archive again from {CIFAR10.url}")
    return f"extracted {archive.name}"


def count_images(folder: Path) -> dict[str, int]:
    """Image count of every batch, after checking its structure (uint8 (N, 3072) rows, labels 0..9)."""
    names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list]
    return {name: len(read_labelled(folder / name, hint=ARCHIVE_HINT).data) for name in names}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m data.prepare_cifar10",
                                description="Verify/extract CIFAR-10 (python version) against the official md5 sums.")
    p.add_argument("--root", required=True,
                   help=f"folder holding {CIFAR10.filename} and/or {CIFAR10.base_folder}/")
    p.add_argument("--download", action="store_true", help=f"fetch {CIFAR10.url} if the archive is needed and absent")
    p.add_argument("--no-check", action="store_true",
                   help="skip the md5 sums (custom or synthetic data); presence and structure are still checked")
    p.add_argument("--make-splits", action="store_true",
                   help=f"then run {SPLITS_MODULE} --root ROOT (default: print that command)")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    args = build_parser().parse_args(argv)
    root = require_dir(args.root, "CIFAR-10 root", ARCHIVE_HINT)
    verify = not args.no_check
    action = ensure_batches(root, verify, args.download)
    counts = count_images(root / CIFAR10.base_folder)
    train = sum(n for name, n in counts.items() if name.startswith("data_batch"))
    print(f"{root / CIFAR10.base_folder}: {action}; {train:,} training images in {len(CIFAR10.train_list)} "
          f"batches, {counts[CIFAR10.test_list[0][0]]:,} test images; "
          f"{'md5 sums match the official ones' if verify else 'md5 sums not checked (--no-check)'}", flush=True)
    if args.make_splits:
        from classification import generate_splits
        generate_splits.main(["--root", str(root)])
    else:
        print(f"next: python -m {SPLITS_MODULE} --root {root}", flush=True)
    return counts


if __name__ == "__main__":
    sys.exit(run_cli(main))
