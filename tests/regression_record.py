"""Record the bit-for-bit regression fixture ``tests/fixtures/regression.json`` (issue 13).

Three tiny end-to-end runs, all fp32 on the CPU, one process each (``AMP=0``, ``WORKERS=0``,
``OMP_NUM_THREADS=1``, ``DEVICE=cpu``, no ``NGPUS``):

* ``seg``: ``segmentation/dmt-voc-20.sh`` with ``tests/test_seg_scripts.py``'s overrides (MobileNet
  backbone, random init, 33² crops, one epoch) and one phase (``RATIOS=1.0``): two baselines, two
  labelling passes, two DMT trainings;
* ``cls``: ``classification/dmt-c10-1000.sh`` with ``tests/test_cls_scripts.py``'s tiny settings and
  one phase (``RATIOS=1.0``): its own phase 0, one labelling pass, one phase, two test runs;
* ``demo``: ``./demo.sh`` at a reduced size (16 training images, 2 of them labelled) with one phase
  (``RATIOS=1.0``).

What is recorded for each run (see :func:`summarise`): every ``log.txt`` line's metric fields (not
the cost fields of :data:`COST_FIELDS`), a sha256 of every pseudo-label array (data + dtype + shape,
so a change of the ``.npy`` header or pickle layout does not matter) and, for every snapshot
``<OUT>/*.pt``, a sha256 of its model state_dict (names + dtype + shape + bytes, sorted by name; not
the file bytes, which may gain fields). ``tests/test_regression_guard.py`` reruns the same runs and
compares everything exactly.

Regenerate (``python -m tests.regression_record``) ONLY when a change is meant to alter the numbers
(a bug fix in the numerics, a new default that the tiny runs exercise), with the reason in the
commit message, or when the fixture's environment (torch version, CPU kernel capability, Pillow /
numpy versions; the guard skips there) is not the one the project's CI runs on. Never regenerate to
make a refactor pass: a refactor must reproduce the fixture bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "regression.json"
# log.txt fields that measure cost, describe the machine or hold this machine's paths, not the result
COST_FIELDS = frozenset({"wall_s", "images_per_s", "peak_mem_gb", "device", "procs", "checkpoint"})
PINNED = {"AMP": "0", "WORKERS": "0", "OMP_NUM_THREADS": "1", "DEVICE": "cpu", "DMT_NO_PROGRESS": "1"}
SEG_ENV = {"BACKBONE": "mobilenet_v3_large", "PRETRAINED": "none", "CROP": "33 33", "TEST_SIZE": "41 41",
           "BASE_EPOCHS": "1", "PHASE_EPOCHS": "1", "BASE_BATCH": "4", "RATIOS": "1.0"}
CLS_ENV = {"BASE_EPOCHS": "1", "BASE_BATCH": "10", "PHASE_EPOCHS": "1", "BATCH_PSEUDO": "16",
           "BATCH_LABELED": "4", "LABEL_BATCH": "32", "PHASE_VAL": "2", "LABELS_PER_CLASS": "1", "RATIOS": "1.0"}
DEMO_ENV = {"NUM_TRAIN": "16", "NUM_VAL": "3", "SIZE_RANGE": "30 40", "CROP": "33 33", "TEST_SIZE": "41 41",
            "BASE_EPOCHS": "1", "ORACLE_EPOCHS": "1", "PHASE_EPOCHS": "1", "BASE_VAL": "2", "PHASE_VAL": "2",
            "RATIOS": "1.0"}


def environment() -> dict[str, str]:
    """What the float results depend on besides the code: the guard skips when any of it differs."""
    import PIL
    import torch
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "numpy": np.__version__, "pillow": PIL.__version__}


# ----------------------------------------------------------------------------------------------
# Hashes
# ----------------------------------------------------------------------------------------------
def array_digest(array: Any) -> str:
    """sha256 over dtype, shape and the C-order bytes of a numpy array or torch tensor."""
    import torch
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu().contiguous()
        head = f"{tensor.dtype}|{tuple(tensor.shape)}|"
        # a byte view works for every dtype (bf16 included) without a numpy round trip of the values
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    else:
        array = np.ascontiguousarray(array)
        head = f"{array.dtype.str}|{array.shape}|"
        data = array.tobytes()
    return hashlib.sha256(head.encode() + data).hexdigest()


def state_dict_digest(state_dict: dict) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, sorted by name."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(f"{name}={array_digest(state_dict[name])};".encode())
    return digest.hexdigest()


def snapshot_digest(path: Path) -> str:
    import torch
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state_dict_digest(state["model"] if "model" in state else state)


def pseudo_digests(folder: Path) -> dict[str, str]:
    """Every pseudo-label array under ``folder``: ``.npy`` files (segmentation) and the label pickles
    (classification: every array entry of the pickled dict, as ``<file>:<key>``). JSON records are
    not hashed (they hold this machine's paths)."""
    out: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".npy":
            out[rel] = array_digest(np.load(path))
        elif path.suffix == "":
            with open(path, "rb") as f:
                entry = pickle.load(f)
            for key in sorted(entry):
                if isinstance(entry[key], np.ndarray):
                    out[f"{rel}:{key}"] = array_digest(entry[key])
    return out


def summarise(out: Path) -> dict[str, Any]:
    """The recorded outcome of one run folder."""
    from utils.run_log import parse_log_line
    log: dict[str, dict[str, str]] = {}
    for line in (out / "log.txt").read_text().splitlines():
        parsed = parse_log_line(line)
        if parsed is None:
            continue
        name, best, fields = parsed
        log[name] = {"best": repr(best), **{k: v for k, v in fields.items() if k not in COST_FIELDS}}
    snapshots = {p.name: snapshot_digest(p) for p in sorted(out.glob("*.pt")) if not p.name.endswith(".resume.pt")}
    return {"log": log, "pseudo": pseudo_digests(out / "pseudo"), "snapshots": snapshots}


# ----------------------------------------------------------------------------------------------
# The runs
# ----------------------------------------------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NGPUS", "EXTRA_ARGS", "PYTHONHASHSEED")}
    return {**env, "PYTHON": sys.executable, **PINNED, **extra}


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def run_seg(base: Path) -> Path:
    import torch
    from data.synthetic import make_voc
    from segmentation.generate_splits import id_list_text
    from segmentation.models import deeplab_v2
    from utils.checkpoint import save_checkpoint
    voc = make_voc(base / "voc", num_train=12, num_val=3, size_range=(30, 40), seed=0)
    sets = voc / "ImageSets" / "Segmentation"
    ids = (sets / "trainaug.txt").read_text().split()
    (sets / "20_labeled_1.txt").write_text(id_list_text(ids[:4]))
    (sets / "20_unlabeled_1.txt").write_text(id_list_text(ids[4:]))
    coco = base / "coco_init.pt"  # stands in for the converted COCO checkpoint (seeded random init)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_checkpoint(coco, model=deeplab_v2(21, "mobilenet_v3_large", pretrained=None))
    out = base / "seg"
    _run(["bash", "segmentation/dmt-voc-20.sh", "1"],
         _env(**SEG_ENV, DATA_ROOT=str(voc), OUT=str(out), COCO_INIT=str(coco)))
    return out


def run_cls(base: Path) -> Path:
    from classification import generate_splits
    from data.synthetic import make_cifar10
    root = base / "cifar"
    make_cifar10(root, num_train_per_class=8, num_test_per_class=2)
    generate_splits.main(["--root", str(root), "--sizes", "1", "--seeds", "1", "--val-size", "3"])
    out = base / "cls"
    _run(["bash", "classification/dmt-c10-1000.sh", "1"],
         _env(**CLS_ENV, DATA_ROOT=str(root), OUT=str(out), CL_OUT=str(base / "no-cl-run")))
    return out


def run_demo(base: Path) -> Path:
    out = base / "demo"
    _run(["bash", "demo.sh"], _env(**DEMO_ENV, DEMO_OUT=str(out)))
    return out


RUNS = {"demo": run_demo, "seg": run_seg, "cls": run_cls}  # the longest first (two at a time)


def record(base: Path, parallel: int = 2) -> dict[str, Any]:
    """Run the three runs under ``base`` (``parallel`` at a time) and summarise each."""
    def one(item):
        name, fn = item
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        return name, summarise(fn(folder))

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return dict(pool.map(one, RUNS.items()))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="dmt-regression-") as tmp:
        runs = record(Path(tmp))
    fixture = {"environment": environment(), "runs": runs}
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = FIXTURE.with_suffix(".json.tmp")
    tmp_file.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
    tmp_file.replace(FIXTURE)
    counts = {k: (len(v["log"]), len(v["pseudo"]), len(v["snapshots"])) for k, v in runs.items()}
    print(f"wrote {FIXTURE} (log lines, pseudo arrays, snapshots per run: {counts})")


if __name__ == "__main__":
    main()
