"""A DMT step, from the DataLoader to ``optimizer.step()``, runs code of at most 5 project files (the
model excluded), the ones docs/code-map.md names ("How one DMT step flows").

Measured, not declared: a profiler records the file of every Python function that runs between the
Trainer's ``next(stream)`` and the return of :func:`utils.trainer.backward_step` (backward +
optimizer step), over the real programs' training steps (tiny data, fp32, CPU, ``--workers 0`` so
that the sampler, dataset and collate run in this process)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classification import generate_splits
from classification import options as cls_options
from classification import training as cls_training
from classification.cifar import write_pseudo
from classification.run_config import RunConfig as ClsRunConfig
from data.synthetic import make_cifar10, make_voc
from segmentation import options as seg_options
from segmentation import training as seg_training
from segmentation.generate_splits import id_list_text
from segmentation.run_config import RunConfig as SegRunConfig
from utils import trainer
from utils.amp import Precision
from utils.cli import Runtime
from utils.distributed import DistInfo

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
MODEL_FILES = ("segmentation/models/", "classification/models.py")  # the model is not counted

SEGMENTATION = {"utils/trainer.py", "segmentation/datasets.py", "segmentation/transforms.py",
                "segmentation/training.py", "utils/losses.py"}
CLASSIFICATION = {"utils/trainer.py", "classification/cifar.py", "classification/augment.py",
                  "classification/training.py", "utils/losses.py"}
# --device-augment (the default on CUDA): the loader reads raw rows (batch_augment.py, not cifar.py's
# dataset), draws the choices and augments on the device (batch_ops.py), in place of augment.py
CLASSIFICATION_DEVICE = {"utils/trainer.py", "classification/batch_augment.py", "classification/batch_ops.py",
                         "classification/training.py", "utils/losses.py"}


class _Stop(Exception):
    """Raised after the Trainer's loop: the test needs the steps, not the run's outputs."""


def step_files(monkeypatch, run) -> tuple[set[str], int]:
    """The project files (relative to the repo, model and tests excluded) whose Python code ran
    inside a training step of ``run()``, and the number of steps seen."""
    fit_code, step_code = trainer.Trainer.fit.__code__, trainer.backward_step.__code__
    seen: set[str] = set()
    state = {"on": False, "steps": 0}

    def profile(frame, event, arg):
        if event == "c_call" and arg is next and frame.f_code is fit_code:
            state["on"] = True  # the Trainer draws the step's batch
        elif event == "call" and state["on"]:
            path = Path(frame.f_code.co_filename)
            if path.is_relative_to(REPO):
                seen.add(path.relative_to(REPO).as_posix())
        elif event == "return" and frame.f_code is step_code:
            state["on"] = False  # optimizer.step() has run
            state["steps"] += 1

    real_fit = trainer.Trainer.fit

    def profiled_fit(self, batches, step_fn, evaluate):
        sys.setprofile(profile)
        try:
            real_fit(self, batches, step_fn, evaluate)
        finally:
            sys.setprofile(None)
        raise _Stop

    monkeypatch.setattr(trainer.Trainer, "fit", profiled_fit)
    with pytest.raises(_Stop):
        run()
    project = {f for f in seen if not f.startswith(("tests/", ".venv/")) and not f.startswith(MODEL_FILES)}
    return project, state["steps"]


def runtime() -> Runtime:
    return Runtime(CPU, DistInfo(), Precision("fp32", CPU), torch.contiguous_format)


def test_segmentation_dmt_step_passes_through_the_five_named_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")
    root = make_voc(tmp_path / "voc", num_train=6, num_val=1, size_range=(30, 34), seed=0)
    lists = root / "ImageSets" / "Segmentation"
    ids = (lists / "trainaug.txt").read_text().split()
    (lists / "20_labeled_0.txt").write_text(id_list_text(ids[:2]))
    (lists / "20_unlabeled_0.txt").write_text(id_list_text(ids[2:]))
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    rng = np.random.default_rng(0)
    for i in ids[2:]:  # pseudo labels at the image size: (label, confidence)
        w, h = Image.open(root / "JPEGImages" / f"{i}.jpg").size
        arr = np.stack([rng.integers(0, 21, (h, w)), rng.uniform(0, 1, (h, w))], axis=-1).astype(np.float32)
        np.save(pseudo / f"{i}.npy", arr)
    args = seg_options.parse_args([
        "--data-root", str(root), "--out-dir", str(tmp_path / "out"), "--backbone", "mobilenet_v3_large",
        "--pretrained", "none", "--crop-size", "33", "33", "--test-size", "35", "35", "--device", "cpu",
        "--workers", "0", "--train-set", "20", "--sets-id", "0", "--state", "1", "--pseudo-dir", str(pseudo),
        "--epochs", "1", "--batch-size-labeled", "1", "--batch-size-pseudo", "2", "--val-num-steps", "1000",
        "--exp-name", "files"])
    files, steps = step_files(monkeypatch, lambda: seg_training.run_training(SegRunConfig.from_args(args), runtime()))
    assert steps == 2
    assert {"utils/trainer.py", "segmentation/training.py", "utils/losses.py"} <= files  # the window saw the step
    assert files <= SEGMENTATION, f"a DMT step also runs {sorted(files - SEGMENTATION)}"


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    make_cifar10(root, num_train_per_class=4, num_test_per_class=1)
    generate_splits.main(["--root", str(root), "--sizes", "2", "--seeds", "1", "--val-size", "1"])
    folder = root / "cifar-10-batches-py"
    rows = np.random.default_rng(0).integers(0, 256, (6, 3072), dtype=np.uint8)
    probs = np.random.default_rng(1).dirichlet(np.ones(10), size=6).astype(np.float32)
    write_pseudo(folder / "2_seed1_pseudo", rows, probs)
    return root


@pytest.mark.parametrize("device_augment", [False, True], ids=["pil", "device-augment"])
def test_classification_dmt_step_passes_through_the_five_named_files(cifar, tmp_path, monkeypatch, device_augment):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")
    args = cls_options.parse_dmt([
        "--data-root", str(cifar), "--out-dir", str(tmp_path), "--device", "cpu", "--workers", "0",
        "--train-set", "2_seed1", "--epochs", "1", "--batch-size-pseudo", "3", "--batch-size-labeled", "2",
        "--val-num-steps", "1000", "--gamma1", "4", "--gamma2", "4", "--exp-name", "files",
        *(["--device-augment"] if device_augment else [])])
    files, steps = step_files(monkeypatch, lambda: cls_training.run_training(ClsRunConfig.from_args(args), runtime()))
    assert steps == 2
    assert {"utils/trainer.py", "classification/training.py", "utils/losses.py"} <= files
    expected = CLASSIFICATION_DEVICE if device_augment else CLASSIFICATION
    assert files <= expected, f"a DMT step also runs {sorted(files - expected)}"
