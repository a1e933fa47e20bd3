"""./demo.sh end to end at a tiny scale: the same pipeline and report as the real demo."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from utils.run_log import parse_log_line

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end_and_reports(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "DEMO_OUT": str(out), "NUM_TRAIN": "40", "NUM_VAL": "4", "SIZE_RANGE": "30 40",
           "CROP": "33 33", "TEST_SIZE": "41 41", "BASE_EPOCHS": "1", "ORACLE_EPOCHS": "1", "PHASE_EPOCHS": "1",
           "BASE_VAL": "2", "PHASE_VAL": "2", "WORKERS": "0", "DMT_NO_PROGRESS": "1",
           "SEED": "3", "CLASSES": "3 8 18"}
    proc = subprocess.run(["bash", str(REPO / "demo.sh")], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [parse_log_line(line) for line in (out / "log.txt").read_text().splitlines()]
    names = sorted(name for name, _, _ in lines)
    expected = sorted([f"demo-0__p{k}--{m}" for k in range(6) for m in "ci"] + ["demo-0__oracle"])
    assert names == expected
    best = {name: value for name, value, _ in lines}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline_miou"] == max(best["demo-0__p0--c"], best["demo-0__p0--i"])
    assert summary["dmt_miou"] == max(best["demo-0__p5--c"], best["demo-0__p5--i"])
    assert summary["oracle_miou"] == best["demo-0__oracle"] and summary["seconds"] > 0
    assert (out / "demo.png").stat().st_size > 10_000
    # the data follow SEED= and CLASSES=
    record = json.loads((out / "data" / "synthetic-voc.json").read_text())["args"]
    assert record["seed"] == 3 and record["classes"] == [3, 8, 18]
    # pseudo-label accuracy of every phase's labels, for both models, printed beside the mIoU
    assert sorted(summary["pseudo_labels"]) == [str(k) for k in range(1, 6)]
    for per_model in summary["pseudo_labels"].values():
        assert sorted(per_model) == ["c", "i"]
        assert all(0 <= acc["overall"] <= 100 and 0 < acc["kept"] <= 100 for acc in per_model.values())
    assert "c's labels right: all / objects" in proc.stdout
    assert "| DMT phase 5 |" in proc.stdout and "all labels (oracle)" in proc.stdout
    assert list((out / "tb").glob("demo-0__summary/events.*"))
    # five labelling passes per model, each in its own folder, each complete
    folders = sorted(p.name for p in (out / "pseudo").iterdir())
    assert len(folders) == 10 and not any(name.endswith(".partial") for name in folders)
