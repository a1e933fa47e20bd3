"""Atomic IO, checkpoints, log.txt lines and run records."""
from __future__ import annotations

import errno
import json

import pytest
import torch
from torch import nn

from utils import io as uio
from utils.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from utils.errors import UserError, run_cli
from utils.run_log import (finish_run, finished_run, format_log_line, has_log_line, parse_log_line,
                           record_run)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with uio.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_disk_full_becomes_user_error_naming_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match="ckpt.pt: no space left"):
        save_checkpoint(target, model=nn.Linear(2, 2))
    assert list(tmp_path.iterdir()) == []


def test_read_id_list_errors(tmp_path):
    with pytest.raises(UserError, match="missing.txt: split file not found"):
        uio.read_id_list(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="empty"):
        uio.read_id_list(tmp_path / "empty.txt")
    (tmp_path / "ok.txt").write_text("a\nb\n\n")
    assert uio.read_id_list(tmp_path / "ok.txt") == ["a", "b"]


def test_run_cli_turns_user_error_into_exit_2(capsys):
    def main(argv):
        raise UserError("x.png: unreadable image; re-download it")
    assert run_cli(main, []) == 2
    assert capsys.readouterr().err.strip() == "error: x.png: unreadable image; re-download it"


def test_checkpoint_round_trip_and_original_keys(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / 10)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    sched.step()
    path = tmp_path / "run.pt"
    save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, step=7, best_metric=12.5)
    state = load_checkpoint(path)
    assert {"model", "optimizer", "lr_scheduler"} <= set(state)  # the original's snapshot keys
    assert state["step"] == 7 and state["best_metric"] == 12.5
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    load_model_weights(other, path)
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)


def test_wrong_checkpoint_errors(tmp_path):
    with pytest.raises(UserError, match="nope.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="junk.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(junk)
    path = tmp_path / "small.pt"
    save_checkpoint(path, model=nn.Linear(3, 2))
    with pytest.raises(UserError, match=r"small.pt: checkpoint does not fit this model \(1 shape mismatches"):
        load_model_weights(nn.Linear(4, 2), path)
    with pytest.raises(UserError, match="missing keys"):
        load_model_weights(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)), path)


def test_ddp_prefix_is_stripped(tmp_path):
    src = nn.Linear(3, 2)
    path = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = nn.Linear(3, 2)
    load_model_weights(dst, path)
    assert torch.equal(dst.weight, src.weight)


def test_log_line_format_and_parse():
    line = format_log_line("exp__p1--c", 69.125, final=68.5, protocol="whole", procs=1)
    assert line == "exp__p1--c: 69.125 | final=68.5 | protocol=whole | procs=1"
    assert parse_log_line(line) == ("exp__p1--c", 69.125, {"final": "68.5", "protocol": "whole", "procs": "1"})
    assert parse_log_line("cl_c10-100-1__p0: 85.3") == ("cl_c10-100-1__p0", 85.3, {})  # original shape
    assert parse_log_line("test: 85.3") == ("test", 85.3, {})
    assert parse_log_line("garbage line") is None


def test_record_run_is_idempotent(tmp_path):
    log = tmp_path / "log.txt"
    record_run(log, "a", 1.0)
    record_run(log, "a", 2.0)
    record_run(log, "b", 3.0)
    assert log.read_text().splitlines() == ["a: 1", "b: 3"]
    assert has_log_line(log, "b") and not has_log_line(log, "c")


def test_finished_run_repairs_missing_log_line(tmp_path):
    log = tmp_path / "log.txt"
    assert finished_run(tmp_path, log, "exp") is None
    finish_run(tmp_path, log, "exp", 50.0, final=49.0)
    log.unlink()  # as if killed between the record and the log line
    record = finished_run(tmp_path, log, "exp")
    assert record["best"] == 50.0
    assert log.read_text() == "exp: 50 | final=49\n"
    assert json.loads((tmp_path / "exp.done.json").read_text())["final"] == 49.0
