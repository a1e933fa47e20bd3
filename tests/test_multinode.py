"""run_py (utils/launch.sh) across nodes: the torchrun options it derives from NNODES / NODE_RANK /
MASTER_ADDR / MASTER_PORT / RDZV_ENDPOINT or, under srun, from the SLURM variables; and two "nodes"
on 127.0.0.1 (two launcher processes, one gloo worker each) through a tiny training and labelling
step of segmentation.main.

What the two-node run must equal:
* training: the same 2-process world on one node (torchrun --standalone, NGPUS=2), bit for bit
  up to float tolerance. It does not equal one process with the whole batch: each rank's BatchNorm
  normalises its own half of the batch (SyncBatchNorm needs CUDA), so the weights differ;
* labelling (inference, CBC thresholds pooled over ranks, docs/method.md §2.1): one single process,
  file for file.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import seg_main_argv, voc_with_split
from utils.run_log import parse_log_line

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_py(args: list[str], env: dict[str, str], **popen) -> subprocess.Popen:
    """`run_py segmentation.main ARGS` from utils/launch.sh, in a fresh bash."""
    full = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "DMT_NO_PROGRESS": "1", **env}
    for key in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "RDZV_ENDPOINT", "SLURM_STEP_ID",
                "SLURM_STEPID", "SLURM_NNODES"):
        if key not in env:
            full.pop(key, None)
    return subprocess.Popen(["bash", "-c", 'source utils/launch.sh; run_py "$@"', "_", *args], cwd=REPO, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(procs: list[subprocess.Popen]) -> None:
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]


def two_nodes(args: list[str]) -> None:
    port = str(free_port())
    finish([run_py(["segmentation.main", *args], {"NNODES": "2", "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                                                  "MASTER_PORT": port}) for rank in (0, 1)])


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return voc_with_split(tmp_path_factory.mktemp("voc"), num_train=8, num_val=2, size_range=(30, 40), seed=0)


def common(voc: Path, out: Path, *extra: str) -> list[str]:
    return seg_main_argv(voc, out, *extra, crop=33, test_size=41)


def log(out: Path) -> dict[str, tuple[float, dict[str, str]]]:
    return {name: (value, fields) for name, value, fields in
            map(parse_log_line, (out / "log.txt").read_text().splitlines())}


@pytest.mark.slow
def test_two_nodes_on_loopback_train_and_label_like_one_node(voc, tmp_path):
    train = ["--state", "2", "--exp-name", "base", "--epochs", "2", "--batch-size-labeled", "2",
             "--val-num-steps", "1", "--seed", "1"]
    one_node, nodes = tmp_path / "one-node", tmp_path / "two-nodes"
    finish([run_py(["segmentation.main", *common(voc, one_node, *train)], {"NGPUS": "2"})])
    two_nodes(common(voc, nodes, *train))

    (best1, f1), (best2, f2) = log(one_node)["base"], log(nodes)["base"]
    assert f2["procs"] == f1["procs"] == "2" and f2["iters"] == f1["iters"] == "4"  # 2 epochs × 4 images / 2
    assert best2 == pytest.approx(best1, abs=1e-4) and float(f2["final"]) == pytest.approx(float(f1["final"]), abs=1e-4)
    w1 = torch.load(one_node / "base.pt", weights_only=False)["model"]
    w2 = torch.load(nodes / "base.pt", weights_only=False)["model"]
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-5, atol=1e-6, msg=key)

    # labelling with that model: two nodes give the single process's files and thresholds
    label = ["--state", "1", "--labeling", "--exp-name", "lab", "--continue-from", str(one_node / "base.pt"),
             "--label-ratio", "0.5", "--batch-size-labeled", "2"]
    single = tmp_path / "single"
    finish([run_py(["segmentation.main", *common(voc, single, *label, "--pseudo-dir", str(single / "pseudo"))], {})])
    two_nodes(common(voc, nodes, *label, "--pseudo-dir", str(nodes / "pseudo")))
    record1 = json.loads((single / "pseudo" / "labeling.json").read_text())
    record2 = json.loads((nodes / "pseudo" / "labeling.json").read_text())
    assert record2["thresholds"] == pytest.approx(record1["thresholds"], abs=1e-6)
    assert record2["kept_fraction"] == pytest.approx(record1["kept_fraction"], abs=1e-9)
    files = sorted(p.name for p in (single / "pseudo").glob("*.npy"))
    assert len(files) == 4 and files == sorted(p.name for p in (nodes / "pseudo").glob("*.npy"))
    labels = []
    for name in files:
        a, b = np.load(single / "pseudo" / name), np.load(nodes / "pseudo" / name)
        np.testing.assert_array_equal(b[..., 0], a[..., 0])
        np.testing.assert_allclose(b[..., 1], a[..., 1], atol=1e-6)
        labels.append(a[..., 0])
    labels = np.concatenate([x.ravel() for x in labels])
    assert (labels == 255).any() and (labels != 255).any()  # ratio 0.5 really dropped pixels


# ------------------------------------------------------------------------ the torchrun options
def launched(env: dict[str, str], path_dirs: list[Path] = ()) -> subprocess.CompletedProcess:
    """run_py with PYTHON replaced by `echo`: prints the command it would run."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")
            and k not in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "RDZV_ENDPOINT", "RDZV_ID")}
    full.update(PYTHON="echo", **env)
    if path_dirs:
        full["PATH"] = ":".join([*map(str, path_dirs), full["PATH"]])
    return subprocess.run(["bash", "-c", 'source utils/launch.sh; run_py segmentation.main --n 1 --epochs 2; '
                                         'run_py segmentation.main --epochs 3'],
                          cwd=REPO, env=full, capture_output=True, text=True, timeout=30)


def options(line: str) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in line.split() if arg.startswith("--") and "=" in arg)


def test_options_from_the_environment():
    proc = launched({"NNODES": "4", "NODE_RANK": "3", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "1234",
                     "NGPUS": "8", "RDZV_ID": "job"})
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    # torchrun's options, then the program with its own flags as they were (utils.torchrun where the
    # project has it, so that --n is never read as an abbreviated torchrun option)
    assert (first.startswith("-m torch.distributed.run ") and first.endswith(" -m segmentation.main --n 1 --epochs 2")
            or first.startswith("-m utils.torchrun ") and first.endswith(" -- segmentation.main --n 1 --epochs 2"))
    opts = options(first)
    assert {k: opts[k] for k in ("nnodes", "node-rank", "nproc-per-node", "rdzv-backend", "rdzv-endpoint")} == {
        "nnodes": "4", "node-rank": "3", "nproc-per-node": "8", "rdzv-backend": "c10d", "rdzv-endpoint": "10.0.0.7:1234"}
    # every call has its own rendezvous id, the same on every node (counter + the program's arguments)
    assert opts["rdzv-id"].startswith("job-1-") and options(second)["rdzv-id"].startswith("job-2-")
    again = launched({"NNODES": "4", "NODE_RANK": "0", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "1234",
                      "NGPUS": "8", "RDZV_ID": "job"})
    assert [options(x)["rdzv-id"] for x in again.stdout.splitlines()] == [opts["rdzv-id"], options(second)["rdzv-id"]]
    proc = launched({"NNODES": "2", "NODE_RANK": "1", "RDZV_ENDPOINT": "head:29400"})
    assert options(proc.stdout.splitlines()[0])["rdzv-endpoint"] == "head:29400"


def test_options_under_srun(tmp_path):
    slurm = {"SLURM_STEP_ID": "0", "SLURM_NNODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_ID": "4242",
             "SLURM_JOB_NODELIST": "gpu[07-08]"}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames gpu[07-08]" ] && printf "gpu07\\ngpu08\\n"\n')
    (bin_dir / "scontrol").chmod(0o755)
    opts = options(launched(slurm, [bin_dir]).stdout.splitlines()[0])
    assert (opts["nnodes"], opts["node-rank"], opts["rdzv-endpoint"], opts["nproc-per-node"]) == ("2", "1", "gpu07:29500", "1")
    assert opts["rdzv-id"].startswith("4242-1-")
    opts = options(launched(slurm).stdout.splitlines()[0])  # no scontrol: the list's first host by hand
    assert opts["rdzv-endpoint"] == "gpu07:29500"
    # the batch script itself (no job step) and single-node jobs keep the single-node path
    for env in ({**slurm, "SLURM_STEP_ID": ""}, {**slurm, "SLURM_NNODES": "1"}):
        env = {k: v for k, v in env.items() if v}
        assert launched(env).stdout.splitlines()[0] == "-m segmentation.main --n 1 --epochs 2"


def test_missing_node_rank_or_address_is_one_line_and_exit_2():
    for env, needle in (({"NNODES": "2", "MASTER_ADDR": "h"}, "set NODE_RANK"),
                        ({"NNODES": "2", "NODE_RANK": "0"}, "set MASTER_ADDR")):
        proc = launched(env)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
