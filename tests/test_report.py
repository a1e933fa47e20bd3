"""utils/report.py on log.txt fixtures; every expected number is worked out by hand in the comments."""
from __future__ import annotations

from pathlib import Path

import pytest

from utils import report
from utils.errors import UserError, run_cli

LOG_A = """\
dmt-voc-20-0__p0--c: 60 | final=59.1 | wall_s=3600 | procs=1 | device=H100
dmt-voc-20-1__p0--c: 62 | wall_s=1800 | procs=2 | device=H100
dmt-voc-20-2__p0--c: 64
dmt-voc-20-0__p5--c: 70
dmt-voc-20-0__p5--i: 71
dmt-voc-20-1__p5--c: 69.5
dmt-voc-20-1__p5--i: 68
dmt-city-8-0__p0--c: 59
some free text the old scripts printed
Epoch 3 | loss=0.1
test: 93.1
"""
LOG_B = """\
cl-c10-4000-1__p5--test: 94.0 | wall_s=7200 | procs=4 | device=A100
cl-c10-4000-2__p5--test: 94.5
cl-c10-4000-1__p5: 93.0
dmt-voc-20-2__p5--c: 72 | wall_s=900 | device=H100
dmt-voc-20-2__p5--i: 73
my-own-exp-3__p1--c: 50
"""


@pytest.fixture
def logs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "log.txt").write_text(LOG_A)
    (tmp_path / "b" / "sub" / "log.txt").write_text(LOG_B)
    return tmp_path / "a", tmp_path / "b"


def section(text: str, title: str) -> str:
    start = text.index(f"### {title}")
    end = text.find("\n### ", start + 1)
    return text[start:end if end != -1 else len(text)]


def row(text: str, title: str, first_cell: str) -> list[str]:
    for line in section(text, title).splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} under {title!r}")


def test_per_experiment_rows(logs, capsys):
    a, b = logs
    text = report.main([str(a), str(b)])
    assert capsys.readouterr().out.strip() == text.strip()
    # 60, 62, 64: mean 62, sample std sqrt((4 + 0 + 4) / 2) = 2
    assert row(text, "dmt-voc-20", "`p0--c`") == ["`p0--c`", "62.00 ± 2.00", "3", "0, 1, 2", "62.29"]
    # p5--c: 70, 69.5, 72 -> mean 70.5, std sqrt((0.25 + 1 + 2.25) / 2) = 1.3229
    assert row(text, "dmt-voc-20", "`p5--c`") == ["`p5--c`", "70.50 ± 1.32", "3", "0, 1, 2", "–"]
    # best of c/i per run: 71, 69.5, 73 -> mean 71.1667, std sqrt((0.02778 + 2.77778 + 3.36111) / 2) = 1.7559
    assert row(text, "dmt-voc-20", "`p5--best`") == ["`p5--best`", "71.17 ± 1.76", "3", "0, 1, 2", "69.92"]
    assert row(text, "dmt-city-8", "`p0--c`") == ["`p0--c`", "59.00 ± –", "1", "0", "59.65"]
    # 94.0, 94.5 -> 94.25, std sqrt(2 * 0.0625 / 1) = 0.3536; the training row p5 has no paper number
    assert row(text, "cl-c10-4000", "`p5--test`") == ["`p5--test`", "94.25 ± 0.35", "2", "1, 2", "94.02"]
    assert row(text, "cl-c10-4000", "`p5`") == ["`p5`", "93.00 ± –", "1", "1", "–"]
    assert row(text, "my-own-exp", "`p1--c`") == ["`p1--c`", "50.00 ± –", "1", "3", "–"]
    assert "better of its models' p5" in text  # the DMT row's rule is stated
    # 2 other-shape lines (free text, "Epoch 3 | ...") + 1 other name ("test: 93.1")
    assert "skipped 2 line(s) of another shape and 1 with other run names" in text
    tags = [line.split("|")[1].strip() for line in section(text, "dmt-voc-20").splitlines() if line.startswith("| `")]
    assert tags == ["`p0--c`", "`p5--c`", "`p5--i`", "`p5--best`"]
    assert text.index("### dmt-voc-20") < text.index("### dmt-city-8") < text.index("### cl-c10-4000") \
        < text.index("### my-own-exp")


def test_paper_tables(logs):
    text = report.main([str(a) for a in logs])
    voc = "PASCAL VOC 2012 (val mIoU)"
    assert row(text, voc, "Baseline (DeepLab-v2) (ours)") == [
        "Baseline (DeepLab-v2) (ours)", "–", "–", "62.00 ± 2.00 (n=3)", "–", "–"]
    assert row(text, voc, "Baseline (DeepLab-v2) (paper)") == [
        "Baseline (DeepLab-v2) (paper)", "46.66", "55.62", "62.29", "67.37", "74.75"]
    assert row(text, voc, "DMT (ours)")[3] == "71.17 ± 1.76 (n=3)"
    assert row(text, voc, "DMT (paper)") == ["DMT (paper)", "63.04", "67.15", "69.92", "72.70", "74.75"]
    assert row(text, "Cityscapes (val mIoU)", "Baseline (DeepLab-v2) (ours)")[2] == "59.00 ± – (n=1)"
    assert row(text, "CIFAR-10 (test accuracy)", "Curriculum Labeling (ours)") == [
        "Curriculum Labeling (ours)", "–", "94.25 ± 0.35 (n=2)"]
    assert row(text, "CIFAR-10 (test accuracy)", "DMT (paper)") == ["DMT (paper)", "–", "94.21"]
    assert "### VOC 2012 + SBD" not in text  # no dmt-voc-sbd results: table left out


def test_pooled_baselines_and_sbd(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("dmt-voc-sbd-0__p0--c: 71\ndmt-voc-sbd-0__p0--i: 73\ndmt-voc-sbd-0__oracle: 74.5\n"
                   "dmt-voc-sbd-0__p5--c: 74\ndmt-voc-sbd-0__p5--i: 75\n")
    text = report.main([str(log)])
    # pooled p0: 71, 73 -> 72 ± sqrt(2) = 1.41; best p5 = 75
    assert row(text, "VOC 2012 + SBD (val mIoU)", "mIoU (ours)") == [
        "mIoU (ours)", "72.00 ± 1.41 (n=2)", "74.50 ± – (n=1)", "75.00 ± – (n=1)"]
    assert row(text, "VOC 2012 + SBD (val mIoU)", "mIoU (paper)") == ["mIoU (paper)", "72.10", "74.75", "74.85"]
    assert row(text, "dmt-voc-sbd", "`oracle`")[4] == "74.75"
    assert row(text, "dmt-voc-sbd", "`p0--i`")[4] == "72.10"


def test_gpu_hours(logs):
    text = report.main([*(str(a) for a in logs), "--gpu-hours"])
    gpu = text[text.index("## GPU hours"):]
    lines = [line for line in gpu.splitlines() if line.startswith("| ")]
    # dmt-voc-20 on H100: 3600 x 1 + 1800 x 2 + 900 x 1 (procs missing) = 8100 s = 2.25 h over 3 lines
    assert "| dmt-voc-20 | H100 | 3 | 2.25 |" in lines
    # cl-c10-4000 on A100: 7200 x 4 = 28800 s = 8 h
    assert "| cl-c10-4000 | A100 | 1 | 8.00 |" in lines
    assert "| **total** |  | 4 | **10.25** |" in lines  # 36900 s
    assert "## GPU hours" not in report.main([str(a) for a in logs])


def test_repeated_runs_keep_the_last_line_and_files_are_read_once(logs, tmp_path):
    a, b = logs
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "log.txt").write_text("dmt-voc-20-2__p0--c: 66\n")
    text = report.main([str(a), str(a / "log.txt"), str(tmp_path / "c")])
    assert "From 2 log file(s)" in text and "1 repeated run(s)" in text
    # 60, 62, 66: mean 62.6667, std sqrt((7.1111 + 0.4444 + 11.1111) / 2) = 3.0551
    assert row(text, "dmt-voc-20", "`p0--c`")[1:3] == ["62.67 ± 3.06", "3"]


def test_bad_input(tmp_path, capsys):
    assert run_cli(report.main, [str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
    with pytest.raises(UserError, match="no log.txt below"):
        report.main([str(tmp_path)])
    (tmp_path / "log.txt").write_text("nothing useful\n")
    with pytest.raises(UserError, match="no result lines named"):
        report.main([str(tmp_path)])


def test_out_file(logs, tmp_path):
    text = report.main([str(logs[0]), "--out", str(tmp_path / "r" / "results.md")])
    assert (tmp_path / "r" / "results.md").read_text() == text + "\n"
