"""Deterministic, resumable batch streams."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from utils.distributed import eval_loader
from utils.errors import UserError, run_cli
from utils.trainer import EpochStream, GlobalBatches, paired_batches


class RandomAug(Dataset):
    """Returns (index, a python-random draw, a numpy draw, a torch draw) — an 'augmentation'."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([float(i), random.random(), float(np.random.rand()), float(torch.rand(()))])


def take(it, k):
    return [next(it) for _ in range(k)]


def test_sampler_covers_every_index_once_per_epoch_and_reshuffles():
    batches = GlobalBatches(10, 4, seed=3)
    e0 = [i for b in range(3) for i, _ in batches(b)]
    e1 = [i for b in range(3, 6) for i, _ in batches(b)]
    assert sorted(e0) == list(range(10)) == sorted(e1)
    assert e0 != e1
    assert [batches.size(b) for b in range(6)] == [len(batches(b)) for b in range(6)] == [4, 4, 2] * 2


def test_stream_epoch_length_without_drop_last():
    stream = EpochStream(RandomAug(10), batch_size=4, seed=0)
    assert len(stream) == 3  # 4 + 4 + 2
    sizes = [b.shape[0] for b in take(stream.iterate(), 6)]
    assert sizes == [4, 4, 2, 4, 4, 2]


def test_resume_at_any_step_gives_the_same_batches_and_workers_do_not_matter():
    full = take(EpochStream(RandomAug(10), 3, seed=5).iterate(0), 9)
    for start in (0, 2, 4, 5):
        resumed = take(EpochStream(RandomAug(10), 3, seed=5).iterate(start), 9 - start)
        for a, b in zip(full[start:], resumed):
            assert torch.equal(a, b)
    with_workers = take(EpochStream(RandomAug(10), 3, seed=5, num_workers=2).iterate(0), 9)
    for a, b in zip(full, with_workers):
        assert torch.equal(a, b)


def test_loading_does_not_disturb_global_rngs():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    take(EpochStream(RandomAug(6), 2, seed=0).iterate(), 3)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_paired_batches_cycle_the_secondary_stream():
    primary = EpochStream(RandomAug(6), 2, seed=0, shuffle=False)    # 3 batches per epoch
    secondary = EpochStream(RandomAug(4), 2, seed=0, shuffle=False)  # 2 batches per epoch
    pairs = take(paired_batches(primary, secondary), 4)
    assert [p[:, 0].tolist() for p, _ in pairs] == [[0, 1], [2, 3], [4, 5], [0, 1]]
    assert [s[:, 0].tolist() for _, s in pairs] == [[0, 1], [2, 3], [0, 1], [2, 3]]


class BadSample(Dataset):
    """Sample 3 is unreadable input (a UserError) or a bug (any other exception)."""

    def __init__(self, error=UserError):
        self.error = error

    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == 3:
            raise self.error("/data/JPEGImages/x.jpg: cannot read the image (truncated); re-copy the file")
        return torch.zeros(1)


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("kind", ["training stream", "eval loader"])
def test_user_error_in_a_loader_worker_ends_as_its_one_line(kind, workers, capsys):
    """The one line a bad file gives is the same whatever the number of DataLoader workers: run_cli
    strips PyTorch's "Caught UserError in DataLoader worker process ..." traceback wrapper."""
    def main(argv):
        if kind == "training stream":
            batches = EpochStream(BadSample(), 2, seed=0, shuffle=False, num_workers=workers).iterate(0)
            take(batches, 3)
        else:
            list(eval_loader(BadSample(), 2, num_workers=workers))

    assert run_cli(main, []) == 2
    assert capsys.readouterr().err == "error: /data/JPEGImages/x.jpg: cannot read the image (truncated); re-copy the file\n"


def test_other_errors_in_a_loader_worker_are_not_turned_into_user_errors():
    with pytest.raises(ValueError, match="Caught ValueError in DataLoader worker process"):
        run_cli(lambda argv: list(eval_loader(BadSample(ValueError), 2, num_workers=1)), [])
