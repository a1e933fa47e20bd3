"""SIGKILL a tiny DMT script in the middle of a training phase and in the middle of a labelling pass,
run the same command again, and get the same final log.txt numbers as an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import voc_with_split
from utils.run_log import parse_log_line

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "segmentation" / "dmt-voc-20.sh"


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return voc_with_split(tmp_path_factory.mktemp("kill") / "voc", labelled=6, sets_id=1, num_train=40, num_val=3,
                          size_range=(30, 40), seed=1)


def env_for(voc: Path, out: Path) -> dict:
    return {**os.environ, "DATA_ROOT": str(voc), "OUT": str(out), "BACKBONE": "tiny", "PRETRAINED": "none",
            "DEVICE": "cpu", "WORKERS": "0", "CROP": "33 33", "TEST_SIZE": "41 41", "AMP": "0", "RATIOS": "0.5",
            "BASE_EPOCHS": "4", "BASE_BATCH": "2", "BASE_VAL": "3", "PHASE_EPOCHS": "2", "PHASE_VAL": "4",
            "LABEL_BATCH": "1", "EXTRA_ARGS": "--resume-every 2", "OMP_NUM_THREADS": "1", "DMT_NO_PROGRESS": "1"}


def results(out: Path) -> dict[str, tuple[float, str]]:
    lines = [parse_log_line(line) for line in (out / "log.txt").read_text().splitlines()]
    names = [name for name, _, _ in lines]
    assert len(names) == len(set(names)), names
    return {name: (best, fields["final"]) for name, best, fields in lines}


def run(voc: Path, out: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(SCRIPT), "1"], env=env_for(voc, out), cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def kill_when(voc: Path, out: Path, ready, timeout: float = 300) -> None:
    """Start the script in its own process group and SIGKILL the whole group once ``ready()``."""
    proc = subprocess.Popen(["bash", str(SCRIPT), "1"], env=env_for(voc, out), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the script finished before the kill point"
            assert time.monotonic() < deadline, "kill point never reached"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_sigkill_in_training_and_in_labelling_then_rerun_gives_the_same_numbers(voc, tmp_path):
    reference = tmp_path / "uninterrupted"
    run(voc, reference)
    expected = results(reference)
    assert len(expected) == 4  # p0--c, p0--i, p1--c, p1--i

    # 1. killed during the first phase training (after its first resume checkpoint)
    trained = tmp_path / "killed-training"
    kill_when(voc, trained, lambda: (trained / "dmt-voc-20-1__p1--c.resume.pt").exists())
    assert not (trained / "dmt-voc-20-1__p1--c.done.json").exists()
    rerun = run(voc, trained)
    assert "resuming at iteration" in rerun.stderr
    assert results(trained) == expected

    # 2. killed in the middle of a labelling pass (some label files written, folder not complete)
    labelled = tmp_path / "killed-labelling"

    def labelling_half_done() -> bool:
        partial = list((labelled / "pseudo").glob("*-for-dmt-voc-20-1__p1--i.partial")) if (labelled / "pseudo").exists() else []
        return bool(partial) and len(list(partial[0].rglob("*.npy"))) >= 5

    kill_when(voc, labelled, labelling_half_done)
    run(voc, labelled)
    assert results(labelled) == expected
    for out in (trained, labelled):  # nothing half-written is left behind
        leftovers = [p for p in out.rglob("*") if ".partial" in p.name or ".tmp-" in p.name or p.suffix == ".tmp"]
        assert leftovers == [] and not list(out.glob("*.resume.pt"))
