"""CIFAR-10 files, Dataset and split generation (docs/method.md §2.2, §5.5), on a tiny synthetic CIFAR-10."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from classification import cifar, generate_splits
from classification.labeling import unlabelled_with_truth
from classification.training import label_and_confidence
from classification.options import parse_dmt
from classification.run_config import RunConfig
from data.synthetic import make_cifar10
from utils.errors import UserError, run_cli

PER_CLASS = 13  # synthetic training images per class
VAL = 3  # --val-size for the tests: 10 train images per class remain
SIZES = (1, 3, 6)
SEEDS = (1, 2)
SPLIT_ARGS = ["--sizes", *map(str, SIZES), "--seeds", *map(str, SEEDS), "--val-size", str(VAL)]


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    make_cifar10(root, num_train_per_class=PER_CLASS, num_test_per_class=2)
    return root


@pytest.fixture(scope="module")
def split_root(dataset_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("splits")
    shutil.copytree(dataset_root / "cifar-10-batches-py", root / "cifar-10-batches-py")
    generate_splits.main(["--root", str(root), *SPLIT_ARGS])
    return root


def load(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def official_train(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Batches 1..5 read with plain pickle, independently of classification.cifar."""
    entries = [load(root / "cifar-10-batches-py" / f"data_batch_{i}") for i in range(1, 6)]
    return (np.concatenate([e[b"data"] for e in entries]),
            np.concatenate([np.array(e[b"labels"]) for e in entries]))


def row_set(data: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in data}


def split_file(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    entry = load(root / "cifar-10-batches-py" / name)
    assert set(entry) == {"data", "labels"} and isinstance(entry["labels"], list)
    assert entry["data"].dtype == np.uint8 and entry["data"].shape[1] == 3072
    return entry["data"], np.array(entry["labels"], dtype=np.int64)


def per_class_shuffle(data: np.ndarray, labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """The original's recipe, written out: np.random.seed(seed), then shuffle class 0, 1, ... rows."""
    np.random.seed(seed)
    blocks = []
    for c in range(10):
        rows = data[labels == c]
        np.random.shuffle(rows)
        blocks.append(rows)
    return blocks


# --------------------------------------------------------------------------------------------
# generate_splits
# --------------------------------------------------------------------------------------------
def test_trainval_valtiny_train(dataset_root, split_root):
    data, labels = official_train(dataset_root)
    trainval = split_file(split_root, "trainval_seed1")
    assert np.array_equal(trainval[0], data) and np.array_equal(trainval[1], labels)
    blocks = per_class_shuffle(data, labels, generate_splits.DEFAULT_VALTINY_SEED)
    train, valtiny = split_file(split_root, "train_seed1"), split_file(split_root, "valtiny_seed1")
    assert np.array_equal(valtiny[0], np.concatenate([b[-VAL:] for b in blocks]))
    assert np.array_equal(train[0], np.concatenate([b[:-VAL] for b in blocks]))
    assert np.array_equal(valtiny[1], np.repeat(np.arange(10), VAL))
    assert np.array_equal(train[1], np.repeat(np.arange(10), PER_CLASS - VAL))
    assert row_set(train[0]).isdisjoint(row_set(valtiny[0]))
    assert row_set(train[0]) | row_set(valtiny[0]) == row_set(data)


def test_test_is_a_copy_of_test_batch(split_root):
    folder = split_root / "cifar-10-batches-py"
    assert (folder / "test").read_bytes() == (folder / "test_batch").read_bytes()
    assert len(cifar.labelled_dataset(split_root, "test")) == 20


@pytest.mark.parametrize("seed", SEEDS)
def test_labelled_splits_against_independent_shuffle(split_root, seed):
    train_data, train_labels = split_file(split_root, "train_seed1")
    blocks = per_class_shuffle(train_data, train_labels, seed)
    previous = None
    for k in SIZES:
        labelled = split_file(split_root, f"{k}_seed{seed}_labeled")
        unlabelled = split_file(split_root, f"{k}_seed{seed}_unlabeled")
        assert np.array_equal(labelled[0], np.concatenate([b[:k] for b in blocks]))
        assert np.array_equal(unlabelled[0], np.concatenate([b[k:] for b in blocks]))
        assert np.array_equal(labelled[1], np.repeat(np.arange(10), k))
        assert np.array_equal(unlabelled[1], np.repeat(np.arange(10), 10 - k))
        assert row_set(labelled[0]).isdisjoint(row_set(unlabelled[0]))
        assert row_set(labelled[0]) | row_set(unlabelled[0]) == row_set(train_data)
        # the rows' labels are their true labels
        true_label = {row.tobytes(): c for row, c in zip(train_data, train_labels)}
        assert [true_label[r.tobytes()] for r in labelled[0]] == labelled[1].tolist()
        if previous is not None:  # nesting: per class, the smaller set is a prefix of the larger
            small_k, small = previous
            for c in range(10):
                assert np.array_equal(small[0][small[1] == c], labelled[0][labelled[1] == c][:small_k])
        previous = (k, labelled)


def test_seeds_differ_and_generation_is_deterministic(dataset_root, split_root, tmp_path):
    a, b = split_file(split_root, "6_seed1_labeled"), split_file(split_root, "6_seed2_labeled")
    assert not np.array_equal(a[0], b[0])
    shutil.copytree(dataset_root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    assert run_cli(generate_splits.main, ["--root", str(tmp_path), *SPLIT_ARGS]) == 0
    names = sorted(p.name for p in (split_root / "cifar-10-batches-py").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "cifar-10-batches-py").iterdir())
    assert len(names) == 7 + 4 + 2 * len(SIZES) * len(SEEDS)  # 5 batches, meta, test_batch; 4 step-1 files
    for name in names:
        assert (tmp_path / "cifar-10-batches-py" / name).read_bytes() == \
               (split_root / "cifar-10-batches-py" / name).read_bytes(), name


def test_valtiny_seed_flag_and_from_train(dataset_root, split_root, tmp_path):
    shutil.copytree(dataset_root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    generate_splits.main(["--root", str(tmp_path), *SPLIT_ARGS, "--valtiny-seed", "5", "--seeds", "3"])
    data, labels = official_train(dataset_root)
    blocks = per_class_shuffle(data, labels, 5)
    assert np.array_equal(split_file(tmp_path, "valtiny_seed1")[0], np.concatenate([b[-VAL:] for b in blocks]))
    # --from-train splits an existing file and leaves the step-1 files alone
    before = (tmp_path / "cifar-10-batches-py" / "train_seed1").read_bytes()
    generate_splits.main(["--root", str(tmp_path), "--from-train", "valtiny_seed1", "--sizes", "2", "--seeds", "4"])
    assert (tmp_path / "cifar-10-batches-py" / "train_seed1").read_bytes() == before
    valtiny = split_file(tmp_path, "valtiny_seed1")
    expected = per_class_shuffle(*valtiny, 4)
    assert np.array_equal(split_file(tmp_path, "2_seed4_labeled")[0], np.concatenate([b[:2] for b in expected]))


def test_split_errors(dataset_root, tmp_path, capsys):
    shutil.copytree(dataset_root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    root = str(tmp_path)
    before = sorted(p.name for p in (tmp_path / "cifar-10-batches-py").iterdir())
    with pytest.raises(UserError, match="class 0 has 10 images, fewer than the 11 needed for 11 labelled"):
        generate_splits.main(["--root", root, "--sizes", "1", "11", "--val-size", str(VAL)])
    assert sorted(p.name for p in (tmp_path / "cifar-10-batches-py").iterdir()) == before  # nothing written
    with pytest.raises(UserError, match="fewer than the 21 needed for a valtiny"):
        generate_splits.main(["--root", root])  # default val size 20 > 13 per class
    with pytest.raises(UserError, match="--sizes"):
        generate_splits.main(["--root", root, "--sizes", "0"])
    assert run_cli(generate_splits.main, ["--root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "cifar-10-batches-py" in err and "\n" not in err
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3"):
        generate_splits.main(["--root", root, "--sizes", "1", "--val-size", str(VAL)])


# --------------------------------------------------------------------------------------------
# cifar.py: readers, writers, Dataset
# --------------------------------------------------------------------------------------------
def test_rows_to_images_layout():
    row = np.arange(3072, dtype=np.int64) % 251
    images = cifar.rows_to_images(row.astype(np.uint8)[None])
    assert images.shape == (1, 32, 32, 3)
    for y, x, c in [(0, 0, 0), (0, 1, 0), (1, 0, 1), (31, 31, 2), (5, 17, 2)]:
        assert images[0, y, x, c] == row[c * 1024 + y * 32 + x]


def test_read_official_train_matches_pickles(dataset_root):
    arrays = cifar.read_official_train(dataset_root)
    data, labels = official_train(dataset_root)
    assert np.array_equal(arrays.data, data) and np.array_equal(arrays.targets, labels)
    assert arrays.targets.dtype == np.int64


def test_pseudo_roundtrip_and_format(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    logits = rng.normal(size=(5, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # float64 on purpose
    path = RunConfig.from_args(parse_dmt(["--train-set", "100_seed1", "--data-root", str(tmp_path)])).pseudo_file
    assert path == tmp_path / "cifar-10-batches-py" / "100_seed1_pseudo"
    cifar.write_pseudo(path, data, probs)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    raw = load(path)
    assert set(raw) == {"data", "labels"}
    assert raw["data"].dtype == np.uint8 and raw["labels"].dtype == np.float32 and raw["labels"].shape == (5, 10)
    back = cifar.read_pseudo(path)
    assert np.array_equal(back.data, data) and np.allclose(back.targets, probs, atol=1e-7)
    ds = cifar.pseudo_dataset(path, transform=lambda im: torch.from_numpy(np.array(im)))
    image, target = ds[2]
    assert torch.equal(image, torch.from_numpy(cifar.rows_to_images(data)[2]))
    assert target.dtype == torch.float32 and target.shape == (10,)
    label, confidence = label_and_confidence(torch.stack([ds[i][1] for i in range(5)]))
    assert label.tolist() == probs.argmax(1).tolist()
    assert np.allclose(confidence.numpy(), probs.max(1), atol=1e-7)


def test_label_and_confidence_by_hand():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    label, confidence = label_and_confidence(probs)
    assert label.tolist() == [1, 0] and torch.allclose(confidence, torch.tensor([0.7, 0.5]))


def test_labelled_dataset_and_loader(split_root):
    ds = cifar.labelled_dataset(split_root, "3_seed1_labeled", transform=lambda im: torch.from_numpy(np.array(im)))
    data, labels = split_file(split_root, "3_seed1_labeled")
    assert len(ds) == 30
    image, target = ds[7]
    assert isinstance(target, int) and target == labels[7]
    assert torch.equal(image, torch.from_numpy(data[7].reshape(3, 32, 32).transpose(1, 2, 0).copy()))
    images, targets = next(iter(DataLoader(ds, batch_size=8)))
    assert images.shape == (8, 32, 32, 3) and targets.dtype == torch.int64
    unlabelled, rows, truth = unlabelled_with_truth(split_root / "cifar-10-batches-py" / "3_seed1_unlabeled")
    assert rows.shape == (70, 3072) and unlabelled[4][1] == 4 and len(truth) == 70  # target = index


def write_raw(path: Path, obj) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def test_reader_errors(tmp_path):
    good = np.zeros((2, 3072), np.uint8)
    with pytest.raises(UserError, match="not found"):
        cifar.read_labelled(tmp_path / "nope")
    with pytest.raises(UserError, match="CIFAR-10 folder not found"):
        cifar.labelled_dataset(tmp_path, "test")
    (tmp_path / "garbage").write_bytes(b"this is not a pickle")
    with pytest.raises(UserError, match="not a readable pickle"):
        cifar.read_labelled(tmp_path / "garbage")
    with pytest.raises(UserError, match="expected a dict"):
        cifar.read_labelled(write_raw(tmp_path / "list", [1, 2]))
    with pytest.raises(UserError, match=r"missing key\(s\) \['labels'\]"):
        cifar.read_labelled(write_raw(tmp_path / "nolabels", {"data": good}))
    with pytest.raises(UserError, match=r"shape \(N, 3072\)"):
        cifar.read_labelled(write_raw(tmp_path / "shape", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(UserError, match="uint8"):
        cifar.read_labelled(write_raw(tmp_path / "dtype", {"data": good.astype(np.float32), "labels": [0, 1]}))
    with pytest.raises(UserError, match="3 labels for 2 images|\\(3,\\) labels for 2"):
        cifar.read_labelled(write_raw(tmp_path / "count", {"data": good, "labels": [0, 1, 2]}))
    with pytest.raises(UserError, match="label 10 at index 1 is outside 0..9"):
        cifar.read_labelled(write_raw(tmp_path / "range", {"data": good, "labels": [3, 10]}))
    with pytest.raises(UserError, match="label -1 at index 0"):
        cifar.read_labelled(write_raw(tmp_path / "negative", {b"data": good, b"labels": [-1, 0]}))
    probs = np.full((2, 10), 0.1, np.float32)
    assert cifar.read_pseudo(write_raw(tmp_path / "ok", {"data": good, "labels": probs})).targets.shape == (2, 10)
    with pytest.raises(UserError, match="softmax"):
        cifar.read_pseudo(write_raw(tmp_path / "hard", {"data": good, "labels": [0, 1]}))
    with pytest.raises(UserError, match="row 1 has values outside"):
        cifar.read_pseudo(write_raw(tmp_path / "big", {"data": good, "labels": probs + np.eye(2, 10) * [[0], [1]]}))


def test_writers_refuse_bad_input_and_leave_nothing(tmp_path):
    with pytest.raises(UserError):
        cifar.write_labelled(tmp_path / "x", np.zeros((2, 3072), np.uint8), [0, 12])
    with pytest.raises(UserError):
        cifar.write_pseudo(tmp_path / "y", np.zeros((2, 3072), np.uint8), np.full((2, 10), 2.0))
    assert list(tmp_path.iterdir()) == []
