"""CIFAR-10 files and the torch Dataset over them (docs/method.md §2.2, §5.5).

Three kinds of pickle live in ``<root>/cifar-10-batches-py``, all read with
``pickle.load(f, encoding="bytes")`` (keys may be ``bytes``, as in the official batches, or ``str``,
as in ours; both are accepted):

* the official batches ``data_batch_1..5`` and ``test_batch`` (and ``test``, a byte copy of it):
  ``data`` uint8 (N, 3072) rows (1024 R, 1024 G, 1024 B values, row-major 32x32), ``labels`` ints;
* our split files (``train_seed1``, ``100_seed1_labeled`` ...): {"data": uint8 (n, 3072),
  "labels": list of int} — :func:`read_labelled` / :func:`write_labelled`;
* the pseudo-label file ``<train-set>_pseudo`` (docs/method.md §2.2): {"data": uint8 (N', 3072) raw rows,
  "labels": float32 (N', 10) softmax} — :func:`read_pseudo` / :func:`write_pseudo`.

Every writer is atomic (:func:`utils.io.save_pickle_atomic`); every reader turns a missing file, an
unreadable pickle, wrong keys/shapes/dtypes or labels out of range into one :class:`UserError`.

:class:`CifarDataset` returns ``(image, target)``; ``image`` is ``transform(PIL RGB image)`` (the
transforms of :mod:`classification.augment` take PIL images and return float tensors). The target is

* an ``int`` class label for labelled data (batches collate to int64);
* for pseudo data the teacher's float32 softmax vector (shape (10,)), exactly as stored. A DMT loss
  takes ``confidence, label = probs.max(dim=1)`` on the batch (:func:`classification.training.label_and_confidence`): the
  hard label is the argmax and the teacher confidence the max (docs/method.md §2.2, §3.3);
* the sample's index when no targets are given (for the labeller, which keeps the rows it selects).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from classification.run_config import CIFAR_FOLDER
from utils.errors import UserError
from utils.io import require_dir, require_file, save_pickle_atomic

NUM_CLASSES = 10
IMAGE_SIZE = 32
ROW_LENGTH = 3 * IMAGE_SIZE * IMAGE_SIZE  # 3072
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
SPLITS_HINT = "run python -m classification.generate_splits --root DIR"
DOWNLOAD_HINT = ("download and extract cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                 "(or python -m data.synthetic --kind cifar10) into the root folder")


class CifarArrays(NamedTuple):
    """Rows and targets of one file: ``data`` uint8 (N, 3072); ``targets`` int64 (N,) class labels or
    float32 (N, C) soft labels."""
    data: np.ndarray
    targets: np.ndarray


def cifar_folder(root: str | os.PathLike) -> Path:
    """``<root>/cifar-10-batches-py``, which must exist."""
    return require_dir(Path(root) / CIFAR_FOLDER, "CIFAR-10", DOWNLOAD_HINT)


def _load_pickle_dict(path: Path, hint: str) -> dict[str, object]:
    """Load a pickle (``encoding="bytes"``) that must be a dict; return it with ``str`` keys."""
    require_file(path, "CIFAR-10 file", hint)
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, UnicodeDecodeError, MemoryError) as exc:
        raise UserError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc}); {hint}") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc}); check the file and its permissions") from exc
    if not isinstance(entry, dict):
        raise UserError(f"{path}: holds a {type(entry).__name__}, expected a dict with data and labels; {hint}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in entry.items()}


def _check_rows(path: Path, data: object, hint: str) -> np.ndarray:
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_LENGTH:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise UserError(f"{path}: 'data' must be a uint8 array of shape (N, {ROW_LENGTH}), "
                        f"got {dtype} with shape {shape}; {hint}")
    return data


def _read_entry(path: Path, hint: str) -> tuple[np.ndarray, object]:
    entry = _load_pickle_dict(path, hint)
    missing = [k for k in ("data", "labels") if k not in entry]
    if missing:
        raise UserError(f"{path}: missing key(s) {missing} (has {sorted(entry)}); {hint}")
    return _check_rows(path, entry["data"], hint), entry["labels"]


def check_class_labels(path: str | os.PathLike, labels: object, count: int,
                       num_classes: int = NUM_CLASSES, hint: str = SPLITS_HINT) -> np.ndarray:
    """``labels`` as int64 (count,), or a UserError naming ``path`` if the length, type or range is wrong."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != count:
        raise UserError(f"{path}: {array.shape} labels for {count} images, expected ({count},); {hint}")
    if count and not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"{path}: labels must be integers, got {array.dtype}; {hint}")
    array = array.astype(np.int64)
    bad = np.flatnonzero((array < 0) | (array >= num_classes))
    if bad.size:
        raise UserError(f"{path}: label {array[bad[0]]} at index {bad[0]} is outside 0..{num_classes - 1}; {hint}")
    return array


def check_soft_labels(path: str | os.PathLike, probs: object, count: int,
                      num_classes: int = NUM_CLASSES, hint: str = SPLITS_HINT) -> np.ndarray:
    """``probs`` as float32 (count, num_classes) in [0, 1], or a UserError naming ``path``."""
    array = np.asarray(probs)
    if array.shape != (count, num_classes) or not np.issubdtype(array.dtype, np.floating):
        raise UserError(f"{path}: labels must be a float array of shape ({count}, {num_classes}) softmax "
                        f"vectors, got {array.dtype} with shape {array.shape}; {hint}")
    array = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(array) | (array < 0) | (array > 1)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise UserError(f"{path}: soft label row {row} has values outside [0, 1] or non-finite; {hint}")
    return array


def read_labelled(path: str | os.PathLike, num_classes: int = NUM_CLASSES, hint: str = SPLITS_HINT) -> CifarArrays:
    """A file with integer labels: an official batch, ``test`` or one of our split files."""
    path = Path(path)
    data, labels = _read_entry(path, hint)
    return CifarArrays(data, check_class_labels(path, labels, len(data), num_classes, hint))


def read_official_train(root: str | os.PathLike) -> CifarArrays:
    """``data_batch_1..5`` of ``<root>/cifar-10-batches-py`` concatenated in order."""
    folder = cifar_folder(root)
    parts = [read_labelled(folder / name, hint=DOWNLOAD_HINT) for name in TRAIN_BATCHES]
    return CifarArrays(np.concatenate([p.data for p in parts]), np.concatenate([p.targets for p in parts]))


def write_labelled(path: str | os.PathLike, data: np.ndarray, labels: np.ndarray) -> None:
    """Write a split file {"data": uint8 (n, 3072), "labels": list of int}, atomically."""
    data = _check_rows(Path(path), np.ascontiguousarray(data), "this is a bug in the caller")
    labels = check_class_labels(path, labels, len(data), hint="this is a bug in the caller")
    save_pickle_atomic(path, {"data": data, "labels": [int(c) for c in labels]})


def read_pseudo(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> CifarArrays:
    """The pseudo-label file of docs/method.md §2.2: rows and float32 (N', num_classes) softmax vectors."""
    path = Path(path)
    hint = "rerun the labelling step that writes it"
    data, probs = _read_entry(path, hint)
    return CifarArrays(data, check_soft_labels(path, probs, len(data), num_classes, hint))


def write_pseudo(path: str | os.PathLike, data: np.ndarray, probs: np.ndarray) -> None:
    """Write {"data": uint8 (N', 3072) raw rows, "labels": float32 (N', C) softmax} atomically."""
    hint = "this is a bug in the caller"
    data = _check_rows(Path(path), np.ascontiguousarray(data), hint)
    probs = np.ascontiguousarray(np.asarray(probs), dtype=np.float32)
    probs = check_soft_labels(path, probs, len(data), probs.shape[-1] if probs.ndim == 2 else NUM_CLASSES, hint)
    save_pickle_atomic(path, {"data": data, "labels": probs})


def rows_to_images(data: np.ndarray) -> np.ndarray:
    """(N, 3072) CIFAR rows (channel planes) -> (N, 32, 32, 3) uint8 HWC images (a view)."""
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)


class CifarDataset(Dataset):
    """(uint8 HWC images, targets) with a transform; see the module docstring for the targets.

    ``targets``: int (N,) labels, float (N, C) soft labels, or None (the target is then the index).
    ``transform`` receives a PIL RGB image; None returns the PIL image itself.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray | None,
                 transform: Callable[[Image.Image], object] | None = None) -> None:
        if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3) or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"{len(targets)} targets for {len(images)} images")
        self.images = np.ascontiguousarray(images)  # one copy, so PIL reads each image without one
        self.soft = targets is not None and targets.ndim == 2
        self.targets = (None if targets is None else
                        torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)) if self.soft else
                        np.asarray(targets, dtype=np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[object, object]:
        image = Image.fromarray(self.images[index], "RGB")
        if self.transform is not None:
            image = self.transform(image)
        if self.targets is None:
            return image, index
        if self.soft:
            return image, self.targets[index]
        return image, int(self.targets[index])


def labelled_dataset(root: str | os.PathLike, set_name: str,
                     transform: Callable[[Image.Image], object] | None = None) -> CifarDataset:
    """``<root>/cifar-10-batches-py/<set_name>`` (e.g. ``100_seed1_labeled``, ``test``) with int labels."""
    arrays = read_labelled(cifar_folder(root) / set_name)
    return CifarDataset(rows_to_images(arrays.data), arrays.targets, transform)


def pseudo_dataset(path: str | os.PathLike, transform: Callable[[Image.Image], object] | None = None) -> CifarDataset:
    """The pseudo-label pickle ``path`` (``<pseudo-dir>/<train-set>_pseudo``) with float32 soft labels."""
    arrays = read_pseudo(path)
    if len(arrays.data) == 0:
        raise UserError(f"{path}: holds no pseudo-labelled image; label again with a larger --label-ratio")
    return CifarDataset(rows_to_images(arrays.data), arrays.targets, transform)
