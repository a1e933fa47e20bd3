"""Multi-process training gives the single-process numbers (issue 12; docs/method.md §3.1, §3.3).

Real gloo process groups of 2 and 3 CPU processes. One DMT step (segmentation and classification,
BN in eval mode: SyncBatchNorm needs CUDA) run by DDP on the ranks' shares of a global batch has
the loss, statistics and averaged gradients of one process on the whole batch; the processes'
shares of the step batches concatenate to the single-process batches; BN statistics averaged over
the ranks are the whole batch's. The experiment scripts under torchrun are in
tests/test_multi_process_scripts.py.
"""
from __future__ import annotations

import argparse
import copy
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from utils.trainer import rank_share

PSEUDO, LABELLED = 5, 2  # a global batch of 7: 4 + 3 over 2 processes, 3 + 2 + 2 over 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runtime():
    from utils.amp import Precision
    from utils.cli import Runtime
    from utils.distributed import info
    cpu = torch.device("cpu")
    return Runtime(cpu, info(), Precision("fp32", cpu), torch.contiguous_format)


def parts(x: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pseudo and labelled rows of the global rows [lo, hi) of [pseudo; labelled] batch ``x``."""
    return x[lo:min(hi, PSEUDO)], x[max(lo, PSEUDO):hi]


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]  # (2 of 4 ASPP branches are frozen)


def check_close(name: str, got, expected, rtol=1e-4, atol=1e-6) -> None:
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def check_rank_step(what: str, ddp: nn.Module, loss: torch.Tensor, stats: dict, world: int, ref_loss: float,
                    ref_stats: dict, ref_grads: list[torch.Tensor]) -> None:
    """One rank's DDP step against one process's step on the whole batch: the averaged gradients,
    the mean of the ranks' losses, the statistics."""
    loss.backward()
    check_close(f"{what} grads", grads(ddp), ref_grads)
    total = loss.detach().clone()
    dist.all_reduce(total)
    torch.testing.assert_close(float(total) / world, ref_loss, rtol=1e-5, atol=1e-7)
    assert stats.keys() == ref_stats.keys()
    check_close(f"{what} stats", [stats[k] for k in ref_stats], [ref_stats[k].float() for k in ref_stats])


def segmentation_batch():
    """Global rows: images, pseudo targets (label, confidence; rows < PSEUDO used), labels."""
    g = torch.Generator().manual_seed(3)
    n, h, w = PSEUDO + LABELLED, 33, 33
    images = torch.randn(n, 3, h, w, generator=g)
    labels = torch.randint(0, 5, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < 0.2] = 255
    targets = torch.stack([labels.float(), torch.rand(n, h, w, generator=g)], dim=1)
    return images, targets, torch.randint(0, 5, (n, h, w), generator=g)


def segmentation_cases(rank: int, world: int) -> None:
    from segmentation.models import deeplab_v2
    from segmentation.training import dmt_loss_fn, dmt_step, supervised_step
    from utils.losses import supervised_loss

    torch.manual_seed(0)
    model = deeplab_v2(5, "tiny", pretrained=None).eval()  # BN in eval mode: per-sample outputs
    images, targets, labels = segmentation_batch()
    n = PSEUDO + LABELLED

    def batch(lo, hi, online):
        pseudo = (None,) if online else (parts(targets[:, 0].long(), lo, hi)[0], parts(targets[:, 1], lo, hi)[0])
        return (parts(images, lo, hi)[0], *pseudo), (parts(images, lo, hi)[1], parts(labels, lo, hi)[1])

    def loss_fn(name):
        return dmt_loss_fn(argparse.Namespace(loss=name, gamma1=2.0, gamma2=3.0, online_threshold=0.9))

    reference = {}
    small = 2  # a global batch of 2: one process of 3 gets no image (an empty share)
    for name in ("dmt", "naive", "flip", "online", "supervised", "supervised-small"):
        ref = copy.deepcopy(model)
        if name.startswith("supervised"):
            m = small if name.endswith("small") else n
            loss, stats, _ = supervised_step(ref, supervised_loss, runtime())((images[:m], labels[:m]), 1)
        else:
            online = name == "online"
            loss, stats, _ = dmt_step(ref, loss_fn(name), runtime(), online)(batch(0, n, online), 1)
        loss.backward()
        reference[name] = (float(loss.detach()), stats, grads(ref))

    init(rank, world)
    for name, (ref_loss, ref_stats, ref_grads) in reference.items():
        lo, hi = rank_share(small if name.endswith("small") else n)
        ddp = nn.parallel.DistributedDataParallel(copy.deepcopy(model))
        if name.startswith("supervised"):
            loss, stats, count = supervised_step(ddp, supervised_loss, runtime())((images[lo:hi], labels[lo:hi]), 1)
        else:
            online = name == "online"
            loss, stats, count = dmt_step(ddp, loss_fn(name), runtime(), online)(batch(lo, hi, online), 1)
        assert count == hi - lo
        check_rank_step(f"segmentation {name}", ddp, loss, stats, world, ref_loss, ref_stats, ref_grads)


def classification_cases(rank: int, world: int) -> None:
    from classification.models import wrn_28_2
    from classification.training import dmt_step, supervised_step
    from utils.runtime import seed_everything

    torch.manual_seed(0)
    model = wrn_28_2().eval()
    g = torch.Generator().manual_seed(4)
    n = PSEUDO + LABELLED
    images = torch.randn(n, 3, 32, 32, generator=g)
    p_probs = torch.rand(PSEUDO, 10, generator=g).softmax(dim=1)
    l_labels = torch.randint(0, 10, (n,), generator=g)
    args = argparse.Namespace(alpha=0.75, gamma1=4.0, gamma2=3.0, labeled_weight=0.5, ramp_off_by_one=False)
    reference = {}
    for name, make, batch in (
            ("dmt", lambda m, gs: dmt_step(m, args, runtime(), 10, gs),
             lambda lo, hi: ((parts(images, lo, hi)[0], p_probs[lo:min(hi, PSEUDO)]),
                             (parts(images, lo, hi)[1], parts(l_labels, lo, hi)[1]))),
            ("supervised", lambda m, gs: supervised_step(m, args, runtime(), gs),
             lambda lo, hi: (images[lo:hi], l_labels[lo:hi]))):
        ref = copy.deepcopy(model)
        seed_everything(11)  # λ and π: drawn by rank 0 below from the same state
        loss, stats, _ = make(ref, None)(batch(0, n), 3)
        loss.backward()
        reference[name] = (make, batch, float(loss.detach()), stats, grads(ref))

    init(rank, world)
    lo, hi = rank_share(n)
    for name, (make, batch, ref_loss, ref_stats, ref_grads) in reference.items():
        ddp = nn.parallel.DistributedDataParallel(copy.deepcopy(model))
        seed_everything(11 + rank)  # as utils.cli.setup_runtime: every rank its own RNG
        loss, stats, _ = make(ddp, lambda step: n)(batch(lo, hi), 3)
        check_rank_step(f"classification {name}", ddp, loss, stats, world, ref_loss, ref_stats, ref_grads)


def batch_and_bn_cases(rank: int, world: int) -> None:
    """The ranks' shares of the step batches, gathered in rank order, are the single-process
    batches; running means averaged over the ranks are the whole batch's."""
    from utils.distributed import all_gather_cat
    from utils.trainer import EpochStream, average_bn_statistics_, gather_shares, paired_batches

    class Numbers(torch.utils.data.Dataset):
        def __init__(self, n, offset):
            self.n, self.offset = n, offset

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return torch.tensor([i + self.offset, float(torch.rand(()))])

    def collate(items):
        return torch.stack(items) if items else torch.zeros(0, 2)

    def streams():
        return (EpochStream(Numbers(12, 0), 5, seed=1, collate_fn=collate),
                EpochStream(Numbers(3, 100), 2, seed=2, collate_fn=collate))

    single = [torch.cat(pair) for pair, _ in zip(paired_batches(*streams(), start=2), range(5))]
    bn = nn.BatchNorm1d(3, momentum=0.5)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    bn(x)
    expected_mean = bn.running_mean.clone()

    init(rank, world)
    shares = [pair for pair, _ in zip(paired_batches(*streams(), start=2), range(5))]
    for step, (p, l) in enumerate(shares):
        gathered = gather_shares(torch.cat([p, l]), [hi - lo for lo, hi in
                                                     (rank_share(len(single[step]), r, world) for r in range(world))])
        assert torch.equal(gathered, single[step]), (step, gathered, single[step])
        assert torch.equal(all_gather_cat(torch.cat([p, l])), single[step])  # lengths gathered first
        assert (p[:, 0] < 100).all() and (l[:, 0] >= 100).all()  # each rank knows which rows are pseudo
    lo, hi = rank_share(7)
    bn = nn.BatchNorm1d(3, momentum=0.5)
    bn(x[lo:hi])
    average_bn_statistics_(bn, hi - lo)
    torch.testing.assert_close(bn.running_mean, expected_mean, rtol=1e-5, atol=1e-6)

    # every rank's RNG state goes into the resume checkpoint, and each rank gets its own back
    from utils.runtime import rank_rng_states, seed_everything, set_rank_rng_state
    seed_everything(20 + rank)
    states = rank_rng_states()
    expected = torch.rand(3)
    assert len(states) == world
    torch.manual_seed(99)
    set_rank_rng_state(states)
    assert torch.equal(torch.rand(3), expected)
    seed_everything(20 + (rank + 1) % world)
    assert not torch.equal(torch.rand(3), expected)  # the ranks' states differ


def init(rank: int, world: int) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=world)


def worker(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    try:
        for case in (batch_and_bn_cases, segmentation_cases, classification_cases):
            case(rank, world)
            dist.destroy_process_group()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_a_step_under_ddp_equals_one_process_on_the_global_batch(world):
    os.environ["MASTER_PORT"] = str(free_port())
    mp.start_processes(worker, args=(world, int(os.environ["MASTER_PORT"])), nprocs=world, join=True,
                       start_method="spawn")


def test_torchrun_wrapper_hands_program_args_over_and_shows_an_error_line_once():
    from utils.torchrun import _dedup_errors, split_argv
    assert split_argv(["--standalone", "--nproc_per_node=2", "--", "classification.main_fs", "--n", "1"]) == \
        (["--standalone", "--nproc_per_node=2"], "classification.main_fs", ["--n", "1"])
    read_fd, write_fd = os.pipe()
    out_r, out_w = os.pipe()
    chunks = (b"progress 1\r", b"progress 2\rerror: x.txt: bad; fix it\n", b"p\rerr", b"or: x.txt: bad; fix it\n",
              b"error: y: other\n", b"Traceback (most recent call last):\n")
    import threading
    copier = threading.Thread(target=_dedup_errors, args=(read_fd, out_w))
    copier.start()
    for chunk in chunks:  # one write at a time, as the processes write
        os.write(write_fd, chunk)
        time.sleep(0.01)
    os.close(write_fd)
    copier.join()
    os.close(out_w)
    assert os.read(out_r, 4096) == (b"progress 1\rprogress 2\rerror: x.txt: bad; fix it\np\rerror: y: other\n"
                                    b"Traceback (most recent call last):\n")


def test_rank_shares_split_the_concatenated_batch():
    assert [rank_share(8, r, 4) for r in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]  # VOC 7 + 1 on 4
    assert [rank_share(8, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 8)]
    assert [rank_share(2, r, 4) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert [rank_share(512, r, 3) for r in range(3)] == [(0, 171), (171, 342), (342, 512)]  # 496 + 16
