"""fp16 autocast + GradScaler (the original's apex O1 numerics) on CPU: a step against fp32, a
scaler-skipped step (weights kept, LR scheduler stepped, scale halved, the online ablation's second
step skipped with it), GradScaler state across an interrupted and resumed ``segmentation.main``
run, one tiny experiment script end to end with AMP=1, and the flags' precision defaults.

fp16 convolution backward has no fast CPU kernel in PyTorch (~100x slower than fp32 here), so
every model in this file is tiny."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from segmentation import options as seg_options
from segmentation.main import main as seg_main
from tests.helpers import voc_with_split
from utils import trainer as trainer_module
from utils.amp import Precision, choose_mode
from utils.errors import run_cli
from utils.run_log import RunLogger, parse_log_line
from utils.schedules import poly_scheduler
from utils.trainer import Trainer, backward_step

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_mixed_precision_means_fp16_with_a_grad_scaler_on_every_device():
    args = seg_options.parse_args(["--mixed-precision"])
    assert args.amp_dtype == "fp16"
    assert choose_mode(args.mixed_precision, args.amp_dtype, CPU) == "fp16"
    assert choose_mode(True, "bf16", CPU) == "bf16" and choose_mode(False, "bf16", CPU) == "fp32"
    p = Precision("fp16", CPU)
    assert p.scaler.is_enabled() and p.scaler.get_scale() == 2.0 ** 16
    assert not Precision("bf16", CPU).scaler.is_enabled() and not Precision("fp32", CPU).scaler.is_enabled()


def test_fp16_step_matches_fp32_within_fp16_tolerance():
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 1])
    results = {}
    for mode in ("fp32", "fp16"):
        model = tiny_net()
        w0 = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        precision = Precision(mode, CPU)
        with precision.autocast():
            logits = model(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
        assert backward_step(loss, opt, precision.scaler) is True
        results[mode] = (logits.dtype, [w0_ - p.detach() for w0_, p in zip(w0, model.parameters())], precision)
    assert results["fp32"][0] == torch.float32 and results["fp16"][0] == torch.float16  # it really ran in half
    for d32, d16 in zip(results["fp32"][1], results["fp16"][1]):
        # the update lr·grad: unscaled back to fp32 magnitude, equal up to fp16 rounding (~1e-3 relative)
        assert d16.abs().max() > 0
        assert (d16 - d32).norm() <= 1e-2 * d32.norm() + 1e-6
    assert results["fp16"][2].scaler.get_scale() == 2.0 ** 16  # no overflow, no growth after 1 step


def test_scaler_skipped_step_keeps_weights_steps_the_scheduler_and_skips_the_double_step(tmp_path):
    """Iteration 2's gradients overflow fp16 range once scaled (x·2^16 > 3.4e38 in fp32 too): the
    scaler skips that optimizer step and halves its scale; the poly LR still advances; the online
    ablation's second optimizer.step() (post_step) runs on iterations 1 and 3 only."""
    torch.manual_seed(0)
    model = nn.Linear(2, 1, bias=False)
    w0 = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    total = 3
    precision = Precision("fp16", CPU)
    seen: dict[int, dict] = {}
    post_steps: list[int] = []

    def step_fn(batch, s):
        seen[s] = {"lr": opt.param_groups[0]["lr"], "w": model.weight.detach().clone(), "scale": precision.scaler.get_scale()}
        x = batch * (1e35 if s == 2 else 1.0)
        return model(x).sum(), {}, x.shape[0]  # loss finite in fp32; its scaled gradient is not

    def post_step(s):
        post_steps.append(s)
        opt.step()  # what segmentation.training passes for --online-double-step

    trainer = Trainer(model=model, optimizer=opt, scheduler=poly_scheduler(opt, total), precision=precision,
                      total_steps=total, val_every=100, logger=RunLogger(tmp_path, "t", enabled=False), device=CPU,
                      snapshot_path=None, resume_path=None, log_every=1, desc="t", post_step=post_step)
    trainer.fit(lambda start: itertools.repeat(torch.ones(4, 2)), step_fn, lambda: {"metric": 0.0})
    assert post_steps == [1, 3]
    # weights unchanged by iteration 2, which ran at the poly LR of iteration 2 (scheduler stepped)
    torch.testing.assert_close(seen[3]["w"], seen[2]["w"], rtol=0, atol=0)
    assert seen[1]["lr"] == pytest.approx(0.1) and seen[2]["lr"] == pytest.approx(0.1 * (1 - 1 / 3) ** 0.9)
    assert seen[3]["lr"] == pytest.approx(0.1 * (1 - 2 / 3) ** 0.9)
    assert (seen[1]["scale"], seen[2]["scale"], seen[3]["scale"]) == (2.0 ** 16, 2.0 ** 16, 2.0 ** 15)
    # by hand: loss = Σ_batch w·x, grad = Σ_batch x = (4, 4); iterations 1 and 3 apply it twice each
    expected = w0 - 2 * seen[1]["lr"] * 4.0 - 2 * seen[3]["lr"] * 4.0
    torch.testing.assert_close(model.weight.detach(), expected, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- segmentation.main
@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return voc_with_split(tmp_path_factory.mktemp("voc-fp16"), num_train=8, num_val=2, size_range=(30, 36), seed=3)


def test_fp16_segmentation_run_resumes_to_the_uninterrupted_numbers_and_scaler(voc, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")

    def argv(name):
        return ["--data-root", str(voc), "--out-dir", str(tmp_path), "--backbone", "mobilenet_v3_large",
                "--pretrained", "none", "--crop-size", "33", "33", "--test-size", "37", "37", "--device", "cpu",
                "--workers", "0", "--train-set", "20", "--sets-id", "0", "--state", "2", "--exp-name", name,
                "--epochs", "3", "--batch-size-labeled", "2", "--val-num-steps", "100", "--resume-every", "1",
                "--deterministic", "--mixed-precision"]

    scalers: dict[str, dict] = {}
    real_fit = trainer_module.Trainer.fit

    def recording_fit(self, batches, step_fn, evaluate):
        result = real_fit(self, batches, step_fn, evaluate)
        scalers[self.desc] = {"mode": self.precision.mode, **self.precision.scaler.state_dict()}
        return result

    monkeypatch.setattr(trainer_module.Trainer, "fit", recording_fit)
    assert run_cli(seg_main, argv("straight")) == 0

    real_step = trainer_module.backward_step

    def dying_step(loss, optimizer, scaler):
        if dying_step.calls == 3:  # Ctrl-C in iteration 4, after the checkpoint of iteration 3
            raise KeyboardInterrupt
        dying_step.calls += 1
        return real_step(loss, optimizer, scaler)

    dying_step.calls = 0
    monkeypatch.setattr(trainer_module, "backward_step", dying_step)
    assert run_cli(seg_main, argv("resumed")) == 130
    state = torch.load(tmp_path / "resumed.resume.pt", weights_only=False)
    assert state["step"] == 3 and state["scaler"]["scale"] == 2.0 ** 16 and state["scaler"]["_growth_tracker"] == 3
    monkeypatch.setattr(trainer_module, "backward_step", real_step)
    capsys.readouterr()
    assert run_cli(seg_main, argv("resumed")) == 0
    assert "resuming at iteration 3/6" in capsys.readouterr().err

    assert json.loads((tmp_path / "straight_cfg.json").read_text())["precision"] == "fp16"
    assert scalers["straight"]["mode"] == "fp16" and scalers["straight"]["_growth_tracker"] == 6
    assert scalers["resumed"] == scalers["straight"]  # the scaler continued, not restarted
    a = torch.load(tmp_path / "straight.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed.pt", weights_only=False)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    lines = {p[0]: p for p in map(parse_log_line, (tmp_path / "log.txt").read_text().splitlines())}
    assert lines["resumed"][1] == lines["straight"][1] and lines["resumed"][2]["final"] == lines["straight"][2]["final"]


# ------------------------------------------------------------------------- an experiment script
@pytest.mark.slow
def test_dmt_voc_20_end_to_end_with_amp_1_is_fp16(voc, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "DATA_ROOT": str(voc), "OUT": str(out), "BACKBONE": "tiny", "PRETRAINED": "none",
           "DEVICE": "cpu", "WORKERS": "0", "CROP": "17 17", "TEST_SIZE": "37 37", "AMP": "1", "RATIOS": "1.0",
           "BASE_EPOCHS": "1", "BASE_BATCH": "4", "BASE_VAL": "5", "PHASE_EPOCHS": "1", "PHASE_VAL": "5",
           "BATCH_LABELED": "1", "BATCH_PSEUDO": "3", "LABEL_BATCH": "4", "OMP_NUM_THREADS": "1",
           "DMT_NO_PROGRESS": "1"}
    proc = subprocess.run(["bash", str(REPO / "segmentation" / "dmt-voc-20.sh"), "0"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AMP=0" not in proc.stderr  # AMP=1 was asked for: no CPU default note
    runs = [f"dmt-voc-20-0__p{k}--{m}" for k in (0, 1) for m in "ci"]
    assert sorted(p[0] for p in map(parse_log_line, (out / "log.txt").read_text().splitlines())) == sorted(runs)
    for run in runs:
        config = json.loads((out / f"{run}_cfg.json").read_text())
        assert (config["precision"], config["amp_dtype"], config["mixed_precision"]) == ("fp16", "fp16", True)
    records = [json.loads(p.read_text()) for p in (out / "pseudo").glob("*/labeling.json")]
    assert len(records) == 2 and all(r["key"]["mixed_precision"] and r["key"]["amp_dtype"] == "fp16" for r in records)


def test_tf32_on_except_under_deterministic_and_cublas_workspace_set(monkeypatch):
    """The CUDA switches are plain flags: settable (and checked) without a GPU."""
    import argparse

    from utils.cli import setup_runtime
    from utils.runtime import configure_backends

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        configure_backends(torch.device("cuda"), deterministic=False)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        configure_backends(torch.device("cuda"), deterministic=True)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
        args = argparse.Namespace(device="cpu", seed=1, deterministic=True, mixed_precision=True, amp_dtype="fp16",
                                  channels_last=None)
        rt = setup_runtime(args)  # set before the device is touched, on any device
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and rt.precision.mode == "fp16"
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
         torch.backends.cudnn.deterministic) = saved[:4]
        torch.use_deterministic_algorithms(saved[4])
