"""Check every listed data file before the work starts, from its header (no pixel decoding).

A bad image found when it is first loaded can end a run hours in (after a snapshot of the
unfinished run was written). The programs therefore look at each file a run will read before
training or labelling begins (``--no-check-data`` skips it):

* the file exists and is readable, PIL recognises its format from the header
  (``PIL.Image.open`` without ``load()``), and the format is the expected one (JPEG / PNG);
* a label has a single-channel mode of class indices (PNG ``P`` / ``L`` ...) and the size of its
  image;
* the file is not truncated: a JPEG must hold its end-of-image marker ``FF D9`` and a PNG its
  ``IEND`` chunk within the last bytes of the file (entropy-coded JPEG data cannot contain
  ``FF D9``: every ``FF`` there is followed by ``00`` or a restart marker).

Only headers and file tails are read, so 10,582 VOC images + labels take seconds; files are
checked by a thread pool (the work is I/O) and the first problem *in list order* ends the run with
one :class:`~utils.errors.UserError` line naming the file. Label *values* are still checked when
each label is loaded (that needs the pixels).

Callers: :mod:`segmentation.main` (VOC and Cityscapes lists) and :func:`classification.run_config.check_data`
(the CIFAR pickles: present, ``data`` uint8 (N, 3072) with N labels).
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, UnidentifiedImageError

from utils.errors import UserError

TAIL_BYTES = 4096
JPEG_EOI = b"\xff\xd9"
PNG_IEND = b"IEND\xaeB`\x82"
END_MARKERS = {"JPEG": JPEG_EOI, "PNG": PNG_IEND}
INDEX_MODES = ("P", "L", "I", "I;16")  # single-channel modes that hold class indices


@dataclass(frozen=True)
class Item:
    """One sample to check: its image and (optionally) its label file."""
    image: Path
    label: Path | None = None


def _problem_with(path: Path, role: str, formats: Sequence[str], modes: Sequence[str] | None,
                  hint: str) -> tuple[str | None, tuple[int, int] | None]:
    """(problem message or None, (width, height)) of one file, from its header and its tail."""
    try:
        with open(path, "rb") as f:
            try:
                with Image.open(f) as img:
                    fmt, size, mode = img.format, img.size, img.mode
            except (UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                return f"{path}: not a readable {role} ({' '.join(str(exc).split()) or type(exc).__name__}); {hint}", None
            marker = END_MARKERS.get(fmt)
            if marker is not None:
                end = f.seek(0, os.SEEK_END)
                f.seek(max(0, end - TAIL_BYTES))
                if marker not in f.read():
                    return (f"{path}: {role} file is truncated (no {fmt} end marker in its last bytes); "
                            f"{hint}"), None
    except FileNotFoundError:
        return f"{path}: {role} file not found; {hint}", None
    except IsADirectoryError:
        return f"{path}: is a folder, not a {role} file; {hint}", None
    except OSError as exc:
        return f"{path}: cannot read {role} file ({exc.strerror or exc}); {hint}", None
    if formats and fmt not in formats:
        return f"{path}: {role} file is {fmt}, expected {' or '.join(formats)}; {hint}", None
    if modes is not None and mode not in modes:
        return (f"{path}: {role} has mode {mode}, expected a single-channel PNG of class indices "
                f"(mode {' or '.join(modes)}); {hint}"), None
    return None, size


def _check_item(item: Item, image_formats: Sequence[str], label_formats: Sequence[str],
                label_modes: Sequence[str], image_hint: str, label_hint: str) -> str | None:
    problem, image_size = _problem_with(item.image, "image", image_formats, None, image_hint)
    if problem or item.label is None:
        return problem
    problem, label_size = _problem_with(item.label, "label", label_formats, label_modes, label_hint)
    if problem:
        return problem
    if label_size != image_size:
        return (f"{item.label}: label size {label_size[0]}x{label_size[1]} (WxH) differs from its image "
                f"{item.image} ({image_size[0]}x{image_size[1]}); fix or replace the pair")
    return None


def check_items(items: Sequence[Item], *, what: str = "data", image_formats: Sequence[str] = ("JPEG", "PNG"),
                label_formats: Sequence[str] = ("PNG",), label_modes: Sequence[str] = INDEX_MODES,
                image_hint: str = "replace the file (re-extract the dataset) or drop it from the split list",
                label_hint: str = "replace the label file (re-extract the dataset)", threads: int = 8,
                progress: bool = True) -> int:
    """Check every item (see the module docstring); return how many were checked.

    Raises a :class:`UserError` for the first problem in the order of ``items``."""
    items = list(items)
    if not items:
        return 0
    bar = None
    if progress and os.environ.get("DMT_NO_PROGRESS") != "1" and len(items) >= 1000:
        from tqdm import tqdm
        bar = tqdm(total=len(items), desc=f"checking {what}", unit="file", mininterval=0.5 if sys.stderr.isatty() else 30.0,
                   dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            results = pool.map(lambda item: _check_item(item, image_formats, label_formats, label_modes,
                                                        image_hint, label_hint), items)
            for problem in results:
                if problem is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise UserError(problem + " (found by the data check before the run started; "
                                              "--no-check-data skips it)")
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return len(items)


def items_for(ids: Iterable[str], image_path, label_path=None) -> list[Item]:
    """``Item``s of ``ids`` from two path functions (``label_path`` None: images only)."""
    return [Item(Path(image_path(i)), None if label_path is None else Path(label_path(i))) for i in ids]
