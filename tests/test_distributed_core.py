"""The core's cross-rank pieces under a real 2-process gloo group: CBC thresholds pooled over ranks
equal the single-process thresholds; confusion matrices and accuracy sums add up over ranks."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from utils.metrics import ConfusionMatrix
from utils.pseudo_labels import CBCSampler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_images(n=6, h=9, w=11, classes=4):
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(n, classes, h, w, generator=g).softmax(1)
    return probs.max(1)


def worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        conf, lab = make_images()
        sampler = CBCSampler(4, stride=16)
        for i in range(rank, conf.shape[0], world):  # sharded like the labelling pass
            sampler.add(conf[i], lab[i])
        out[f"t{rank}"] = [sampler.thresholds(r).tolist() for r in (0.2, 0.5, 1.0)]
        cm = ConfusionMatrix(4)
        cm.update(lab[rank::world].flatten(), lab[rank::world].flatten().roll(1))
        out[f"cm{rank}"] = cm.all_reduce().matrix.tolist()
    finally:
        dist.destroy_process_group()


def test_two_rank_thresholds_equal_single_process():
    manager = mp.Manager()
    out = manager.dict()
    mp.start_processes(worker, args=(2, free_port(), out), nprocs=2, join=True, start_method="spawn")
    conf, lab = make_images()
    single = CBCSampler(4, stride=16)
    for i in range(conf.shape[0]):
        single.add(conf[i], lab[i])
    expected = [single.thresholds(r).tolist() for r in (0.2, 0.5, 1.0)]
    assert out["t0"] == expected and out["t1"] == expected
    cm = ConfusionMatrix(4)
    for r in range(2):
        cm.update(lab[r::2].flatten(), lab[r::2].flatten().roll(1))
    assert out["cm0"] == cm.matrix.tolist() == out["cm1"]
