"""The shared training loop: validation schedule, best snapshot, non-finite loss handling."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from utils.amp import Precision
from utils.errors import UserError
from utils.run_log import RunLogger
from utils.schedules import poly_scheduler
from utils.trainer import Trainer


def make_trainer(tmp_path, total=10, val_every=4, resume_every=0):
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(model=model, optimizer=opt, scheduler=poly_scheduler(opt, total), precision=Precision("fp32", torch.device("cpu")),
                   total_steps=total, val_every=val_every, logger=RunLogger(tmp_path / "tb", "t", enabled=False),
                   device=torch.device("cpu"), snapshot_path=tmp_path / "best.pt", resume_path=tmp_path / "resume.pt",
                   log_every=5, resume_every=resume_every, desc="t")


def batches(start):
    return itertools.repeat(torch.ones(4, 2))


def test_validation_schedule_and_strictly_better_snapshots(tmp_path):
    trainer = make_trainer(tmp_path, total=10, val_every=4)
    calls, values = [], iter([5.0, 7.0, 7.0, 6.0])

    def evaluate():
        calls.append(trainer.step)
        return {"metric": next(values)}

    step = lambda batch, s: (trainer.model(batch).pow(2).mean(), {}, 4)  # noqa: E731
    result = trainer.fit(batches, step, evaluate)
    # docs/method.md §8: after steps s with s % 4 == 3 and s == L − 1 (3, 7, 9), then one final evaluation.
    assert calls == [3, 7, 9, 10]
    assert result.best == 7.0 and result.final == 6.0
    assert torch.load(tmp_path / "best.pt", weights_only=False)["step"] == 7  # 7.0 again at 9: not strictly better


def test_non_finite_loss_stops_before_saving(tmp_path):
    trainer = make_trainer(tmp_path, total=10, val_every=4, resume_every=2)

    def step(batch, s):
        loss = trainer.model(batch).pow(2).mean()
        return (loss * float("nan") if s == 2 else loss), {}, 4

    with pytest.raises(UserError, match="non-finite loss by iteration 2"):
        trainer.fit(batches, step, lambda: {"metric": 1.0})
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "resume.pt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
