"""Metrics, schedules, EMA, mixup, precision and runtime helpers, checked by hand."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from classification.training import ModelEMA
from utils.amp import Precision, choose_mode
from utils.errors import UserError
from utils.losses import mix, sample_lambda
from utils.metrics import AccuracyMeter, ConfusionMatrix
from utils.runtime import resolve_device, rng_state, seed_everything, set_rng_state
from utils.schedules import cosine_factor, cosine_scheduler, poly_factor, poly_scheduler
from utils.trainer import backward_step


def test_confusion_matrix_by_hand():
    cm = ConfusionMatrix(3)
    gt = torch.tensor([0, 0, 1, 1, 2, 2, 255, 1])
    pred = torch.tensor([0, 1, 1, 1, 2, 0, 0, 255])  # gt 255 and pred 255 not counted
    cm.update(gt, pred)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    out = cm.compute()
    # IoU: class 0: 1/(2+2-1)=1/3; class 1: 2/(2+3-2)=2/3; class 2: 1/(2+1-1)=1/2
    assert out["iou"] == pytest.approx([100 / 3, 200 / 3, 50])
    assert out["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3 * 100)
    assert out["pixel_acc"] == pytest.approx(4 / 6 * 100)


def test_confusion_matrix_absent_class_is_skipped():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert cm.compute()["miou"] == pytest.approx(100.0)


def test_accuracy_and_fine_grained():
    meter = AccuracyMeter()
    logits = torch.log(torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]]))
    meter.update(logits, torch.tensor([0, 1, 1]))
    out = meter.compute()
    assert out["accuracy"] == pytest.approx(200 / 3)
    assert out["fine_grained"] == pytest.approx((0.7 + 0.6) / 3 * 100)


def test_poly_and_cosine_schedules():
    assert poly_factor(0, 100) == 1.0
    assert poly_factor(50, 100) == pytest.approx(0.5 ** 0.9)
    assert cosine_factor(50, 100) == pytest.approx(0.5)
    assert cosine_factor(100, 100) == pytest.approx(0.0)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = poly_scheduler(opt, 10)
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1 * (1 - i / 10) ** 0.9 for i in range(3)])
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    sched2 = cosine_scheduler(opt2, 4)
    opt2.step(); sched2.step(); opt2.step(); sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1)


def test_ema_update_formula_and_buffers():
    model = nn.BatchNorm1d(2)
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(5.0)
    ema.update(model)
    assert ema.module.weight.tolist() == pytest.approx([0.9 * 1 + 0.1 * 2] * 2)
    assert ema.module.running_mean.tolist() == [5.0, 5.0]
    inverted = ModelEMA(model, decay=0.001)  # the original's effective behaviour ≈ last iterate
    with torch.no_grad():
        model.weight.fill_(3.0)
    inverted.update(model)
    assert inverted.module.weight.tolist() == pytest.approx([0.001 * 2 + 0.999 * 3] * 2)


def test_mixup_lambda_and_mix():
    np.random.seed(0)
    lams = [sample_lambda(0.75, True) for _ in range(200)]
    assert min(lams) >= 0.5
    np.random.seed(0)
    raw = [float(np.random.beta(0.75, 0.75)) for _ in range(200)]
    assert lams == pytest.approx([max(v, 1 - v) for v in raw])
    x = torch.tensor([[1.0], [3.0], [5.0]])
    assert mix(x, 0.75, torch.tensor([2, 0, 1])).flatten().tolist() == pytest.approx([0.75 * 1 + 0.25 * 5, 0.75 * 3 + 0.25 * 1, 0.75 * 5 + 0.25 * 3])


def test_precision_modes_on_cpu():
    cpu = torch.device("cpu")
    assert choose_mode(False, "fp16", cpu) == "fp32"
    assert choose_mode(True, "fp16", cpu) == "fp16"  # the original's numerics, on CPU too
    assert choose_mode(True, "bf16", cpu) == "bf16"
    with pytest.raises(UserError):
        choose_mode(True, "fp8", cpu)
    p = Precision("bf16", cpu)
    layer = nn.Linear(4, 2)
    with torch.autocast(**p.autocast_kwargs):  # what the training steps enter
        out = layer(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    with torch.autocast(**Precision("fp32", cpu).autocast_kwargs):
        assert layer(torch.randn(3, 4)).dtype == torch.float32
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer.weight.detach().clone()
    assert backward_step(out.float().pow(2).mean(), opt, p.scaler) is True
    assert not torch.equal(before, layer.weight)
    assert not p.scaler.is_enabled()


def test_rng_state_roundtrip_and_device():
    seed_everything(3)
    state = rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(UserError):
            resolve_device("cuda")
