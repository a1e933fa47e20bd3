"""Cityscapes id lists ``data_lists/{train,val,test}.txt`` (docs/method.md §5.1).

    python -m segmentation.cityscapes_lists --city-root datasets/cityscapes

Each entry is ``<city>/<city>_xxxxxx_yyyyyy`` for ``leftImg8bit/<split>/<city>/<entry>_leftImg8bit.png``,
sorted by city and then by file name (2,975 / 500 / 1,525 entries for the fine data).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from segmentation.generate_splits import id_list_text
from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import require_dir, write_text_atomic

SPLITS = ("train", "val", "test")
SUFFIX = "_leftImg8bit.png"


def list_split(city_root: Path, split: str) -> list[str]:
    """Sorted ``city/stem`` entries of ``leftImg8bit/<split>``; UserError if missing or empty."""
    images_dir = require_dir(city_root / "leftImg8bit" / split, f"Cityscapes {split} images",
                             "unpack leftImg8bit_trainvaltest.zip into the Cityscapes folder (--city-root)")
    entries = [f"{city.name}/{image.name[:-len(SUFFIX)]}"
               for city in sorted(p for p in images_dir.iterdir() if p.is_dir())
               for image in sorted(city.iterdir()) if image.name.endswith(SUFFIX)]
    if not entries:
        raise UserError(f"{images_dir}: no *{SUFFIX} images in its city folders; "
                        f"unpack leftImg8bit_trainvaltest.zip again")
    return entries


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m segmentation.cityscapes_lists",
                                description="Write Cityscapes data_lists/{train,val,test}.txt.")
    p.add_argument("--city-root", default="datasets/cityscapes", help="the Cityscapes folder (holding leftImg8bit/)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    city_root = Path(args.city_root)
    lists = {split: list_split(city_root, split) for split in SPLITS}
    for split, entries in lists.items():
        write_text_atomic(city_root / "data_lists" / f"{split}.txt", id_list_text(entries))
    counts = ", ".join(f"{split}: {len(entries)}" for split, entries in lists.items())
    print(f"{counts} entries written to {city_root / 'data_lists'}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
