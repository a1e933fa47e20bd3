"""./reproduce.sh: the plan of a paper table (docs/method.md §10), its slot pool with dependencies,
failures, interrupts, the SLURM submission (sbatch replaced by a stub) and one tiny real table on
two CPU slots.

Most tests replace the Python interpreter (PYTHON) by a stub that runs utils.reproduce and
utils.report for real but only records every experiment program the scripts start (its OUT,
CUDA_VISIBLE_DEVICES, DEVICE and start/end times), so that the scheduling is checked in seconds;
the last test runs the real programs.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utils.run_log import parse_log_line

REPO = Path(__file__).resolve().parents[1]
VOC_ORDER = [f"dmt-voc-{f}-{s}" for f in (106, 50, 20, 8) for s in (0, 1, 2)]


def reproduce(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "DMT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(["bash", str(REPO / "reproduce.sh"), *args], capture_output=True, text=True, env=full,
                          cwd=REPO, timeout=timeout)


def plan_lines(stdout: str) -> list[tuple[str, int, str, str]]:
    """(job, slot, after, the command line below it) of every numbered plan line."""
    lines = stdout.splitlines()
    out = []
    for k, line in enumerate(lines):
        m = re.match(r"^\s*\d+\. (\S+)\s+slot (\d+) \([^)]*\)\s+after: (\S+)", line)
        if m:
            out.append((m[1], int(m[2]), m[3], lines[k + 1].strip()))
    return out


# ------------------------------------------------------------------------------------ dry run
def test_voc_dry_run_prints_the_twelve_experiments_in_order(tmp_path):
    proc = reproduce("voc", "--dry-run", "--gpus", "0,1,2,3", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    plan = plan_lines(proc.stdout)
    assert [job for job, _, _, _ in plan] == VOC_ORDER
    for job, slot, after, command in plan:
        experiment, sid = job.rsplit("-", 1)
        assert after == "-"
        assert command == (f"OUT={tmp_path}/{job} bash segmentation/{experiment}.sh {sid} > "
                           f"{tmp_path}/logs/{job}.log 2>&1")
    # four slots, first ready job whenever a slot frees: the first four start at once on slots 0-3
    assert [slot for _, slot, _, _ in plan[:4]] == [0, 1, 2, 3]
    assert "Estimated GPU-hours" in proc.stdout and "paper's" in proc.stdout
    assert not (tmp_path / "logs").exists()  # a dry run writes nothing
    proc = reproduce("voc", "--dry-run", "--gpus", "0+1,2+3", "--out", str(tmp_path))
    assert [slot for _, slot, _, _ in plan_lines(proc.stdout)][:3] == [0, 1, 0] and "(GPUs 2,3)" in proc.stdout


def test_dry_run_dependencies_of_the_ablations_and_cifar(tmp_path):
    plan = plan_lines(reproduce("ablations", "--dry-run", "--slots", "3", "--out", str(tmp_path)).stdout)
    assert [(job, after) for job, _, after, _ in plan] == [("abl-baseline-2", "-")] + [
        (f"abl-{name}-2", "abl-baseline-2") for name in ("cbst", "dst", "naive", "flip", "online")]
    assert f"BASELINE_OUT={tmp_path}/abl-baseline-2 bash segmentation/abl-cbst.sh 2" in plan[1][3]
    plan = plan_lines(reproduce("cifar10", "--dry-run", "--slots", "2", "--out", str(tmp_path)).stdout)
    assert [(job, after) for job, _, after, _ in plan] == [(f"cl-c10-4000-{s}", "-") for s in range(1, 6)] + [
        (f"dmt-c10-4000-{s}", f"cl-c10-4000-{s}") for s in range(1, 6)]
    assert f"CL_OUT={tmp_path}/cl-c10-4000-3 bash classification/dmt-c10-4000.sh 3" in plan[7][3]


def test_dry_run_gpu_hours_from_a_benchmark_file(tmp_path):
    rows = lambda key, value: {"rows": [{"variant": "reference", key: 1.0}, {"variant": "ours", key: value}]}  # noqa: E731
    voc = {"train": {"supervised": rows("ms_per_it", 100.0), "dmt": rows("ms_per_it", 200.0)},
           "labelling": rows("images_per_s", 10.0), "evaluation": rows("images_per_s", 20.0)}
    bench = tmp_path / "bench.json"
    bench.write_text(__import__("json").dumps({"device_name": "Test GPU", "date": "2026-12-01", "size_scale": 1,
                                               "settings": {"voc": voc}}))
    proc = reproduce("dmt-voc-20", "--splits", "1", "--dry-run", "--bench", str(bench), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    # dmt-voc-20 (docs/method.md §7.3): 2 baselines × 8,978 it, 10 phases × 5,744 it, 10 labelling passes
    # over 10,052 images; validations: baseline steps 219, 439, ... (40) + 8,977 + the final one = 42,
    # phase steps 499 ... 5,499 (11) + 5,743 + final = 13; 2 × 42 + 10 × 13 = 214 passes over 1,449 images.
    seconds = 2 * 8978 * 0.1 + 10 * 5744 * 0.2 + 10 * 10052 / 10 + 214 * 1449 / 20
    assert f"[{seconds / 3600:.1f} GPU-h]" in proc.stdout
    assert "Test GPU" in proc.stdout
    # a table whose setting the file lacks is not projected
    proc = reproduce("dmt-city-8", "--splits", "1", "--dry-run", "--bench", str(bench), "--out", str(tmp_path))
    assert proc.returncode == 0 and "GPU-h not projected" in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (["nope", "--dry-run"], "table 'nope': unknown"),
    (["sbd", "--splits", "1", "--dry-run"], "split id 1 does not exist for the table 'sbd'"),
    (["voc", "--gpus", "x,1", "--dry-run"], "--gpus x,1"),
    (["voc", "--splits", "a"], "--splits a"),
    (["voc", "--bench", "/nonexistent.json"], "--bench /nonexistent.json: only with --dry-run"),
    (["voc", "--dry-run", "--bench", "/nonexistent.json"], "no such file"),
    (["voc", "--wat"], "--wat: unknown option"),
    ([], "give a TABLE"),
    (["all", "--splits", "7", "--dry-run"], "no table of 'all' has these"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    proc = reproduce(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and needle in proc.stderr, proc.stderr


def test_help_lists_the_tables():
    proc = reproduce("--help")
    assert proc.returncode == 0
    for table in ("voc", "city", "sbd", "ablations", "cifar10", "cifar10-1000", "all"):
        assert re.search(rf"^\s+{re.escape(table)}\s", proc.stdout, re.M), table


# ------------------------------------------------------------------------- slot pool (stubbed)
STUB = """#!/usr/bin/env bash
# stands in for python: the plan and the report run for real, experiment programs are recorded
if [ "${1:-}" = -m ] && { [ "$2" = utils.reproduce ] || [ "$2" = utils.report ]; }; then exec REAL "$@"; fi
echo "start $(date +%s.%N) ${OUT:-?} cvd=${CUDA_VISIBLE_DEVICES-unset} dev=${DEVICE:-unset} $2 $$" >> RECORD
sleep "${STUB_SLEEP:-0.2}"
if [ -n "${FAIL_OUT:-}" ] && [ "${OUT:-}" = "$FAIL_OUT" ]; then echo "stub: failing on purpose" >&2; exit 3; fi
echo "end $(date +%s.%N) ${OUT:-?}" >> RECORD
"""


@pytest.fixture
def stub(tmp_path) -> dict:
    record = tmp_path / "record.txt"
    python = tmp_path / "python"
    python.write_text(STUB.replace("REAL", sys.executable).replace("RECORD", str(record)))
    python.chmod(0o755)
    data = tmp_path / "cifar" / "cifar-10-batches-py"
    data.mkdir(parents=True)
    for seed in (1, 2, 3):
        (data / f"100_seed{seed}_labeled").write_text("")  # so that the scripts do not make splits
    return {"record": record, "env": {"PYTHON": str(python), "RATIOS": "1.0", "DATA_ROOT": str(data.parent)},
            "runs": tmp_path / "runs"}


def records(path: Path) -> list[tuple[str, float, str, list[str]]]:
    out = []
    for line in path.read_text().splitlines():
        kind, stamp, target, *rest = line.split()
        out.append((kind, float(stamp), Path(target).name, rest))
    return out


def spans(recs) -> dict[str, tuple[float, float]]:
    """job → (first program start, last program end)."""
    result: dict[str, list[float]] = {}
    for kind, stamp, job, _ in recs:
        first, last = result.setdefault(job, [stamp, stamp])
        result[job] = [min(first, stamp), max(last, stamp)]
    return {k: (a, b) for k, (a, b) in result.items()}


def test_slots_dependencies_and_a_failure(stub):
    runs = stub["runs"]
    env = {**stub["env"], "FAIL_OUT": str(runs / "cl-c10-1000-2")}
    proc = reproduce("cifar10-1000", "--splits", "1", "2", "3", "--gpus", "3,5", "--out", str(runs), env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"FAILED cl-c10-1000-2 (exit 3): see {runs}/logs/cl-c10-1000-2.log" in proc.stderr
    assert "stub: failing on purpose" in (runs / "logs" / "cl-c10-1000-2.log").read_text()
    status = dict(line.split("\t") for line in (runs / "logs" / "status-cifar10-1000.tsv").read_text().splitlines())
    assert status == {"cl-c10-1000-1": "ok", "cl-c10-1000-2": "failed (exit 3)", "cl-c10-1000-3": "ok",
                      "dmt-c10-1000-1": "ok", "dmt-c10-1000-3": "ok",
                      "dmt-c10-1000-2": "skipped: needs cl-c10-1000-2, which did not finish"}
    recs = records(stub["record"])
    assert not any(job == "dmt-c10-1000-2" for _, _, job, _ in recs)
    # one GPU per slot, never more than two experiments at once, DMT after the CL run of its seed
    starts = [(job, rest) for kind, _, job, rest in recs if kind == "start"]
    assert {rest[0] for _, rest in starts} <= {"cvd=3", "cvd=5"} and {rest[1] for _, rest in starts} == {"dev=unset"}
    s = spans(recs)
    for t in sorted(a for a, _ in s.values()):
        assert sum(a <= t < b for a, b in s.values()) <= 2
    # both slots are filled before anything is waited for
    assert [re.sub(r"^\[[\d:]+\] ", "", line).split(";")[0] for line in proc.stdout.splitlines()[:2]] == [
        "start  cl-c10-1000-1 on slot 0 (GPU 3)", "start  cl-c10-1000-2 on slot 1 (GPU 5)"]
    for seed in (1, 3):
        assert s[f"dmt-c10-1000-{seed}"][0] > s[f"cl-c10-1000-{seed}"][1]
    report = (runs / "report-cifar10-1000.md").read_text()
    rows = [line for line in report.splitlines() if re.match(r"^\| (cl|dmt)-c10-1000 \| \d \|", line)]
    assert len(rows) == 6 and "| cl-c10-1000 | 2 | failed (exit 3) |" in report

    # rerun once the cause is gone: everything finishes (the scripts skip what is done)
    proc = reproduce("cifar10-1000", "--splits", "1", "2", "3", "--slots", "2", "--out", str(runs), env=stub["env"])
    assert proc.returncode == 0, proc.stderr
    starts = [rest for kind, _, job, rest in records(stub["record"]) if kind == "start" and job == "dmt-c10-1000-2"]
    assert starts and all(r[:2] == ["cvd=", "dev=cpu"] for r in starts)  # CPU slots: no GPU visible, DEVICE=cpu


def test_interrupt_stops_the_experiments_and_a_rerun_continues(stub):
    runs = stub["runs"]
    env = {**os.environ, "PYTHONPATH": str(REPO), **stub["env"], "STUB_SLEEP": "30"}
    first = subprocess.Popen(["bash", str(REPO / "reproduce.sh"), "cifar10-1000", "--splits", "1", "--slots", "2",
                              "--out", str(runs)], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 60
        while not (stub["record"].exists() and stub["record"].read_text()) and time.time() < deadline:
            time.sleep(0.1)
        # a second run on the same folder refuses while the first (or its experiments) run
        second = reproduce("cifar10-1000", "--splits", "1", "--out", str(runs), env=stub["env"])
        assert second.returncode == 2 and "another reproduce.sh" in second.stderr
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 130 and "rerun the same command to continue" in err
    recs = records(stub["record"])
    assert not any(kind == "end" for kind, *_ in recs)
    for _, _, _, rest in recs:  # the running program was stopped with its experiment, not left behind
        with pytest.raises(ProcessLookupError):
            os.kill(int(rest[3]), 0)
    proc = reproduce("cifar10-1000", "--splits", "1", "--out", str(runs), env={**stub["env"], "STUB_SLEEP": "0"})
    assert proc.returncode == 0, proc.stderr
    assert {job for kind, _, job, _ in records(stub["record"]) if kind == "end"} == {"cl-c10-1000-1", "dmt-c10-1000-1"}


# ---------------------------------------------------------------------------------------- SLURM
SBATCH_STUB = """#!/usr/bin/env bash
# records its arguments, answers as sbatch --parsable does (JOBID;CLUSTER)
n=$(( $(wc -l < "RECORD" 2>/dev/null || echo 0) + 1001 ))
printf '%s\\0' "$@" | tr '\\0' '\\t' >> "RECORD"; echo >> "RECORD"
echo "$n;testcluster"
"""


def test_slurm_submits_job_arrays_with_afterok_dependencies(tmp_path):
    record = tmp_path / "sbatch.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH_STUB.replace("RECORD", str(record)))
    (bin_dir / "sbatch").chmod(0o755)
    runs = tmp_path / "shared" / "runs"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_ARGS": "--partition gpu"}
    proc = reproduce("ablations", "--slurm", "--out", str(runs), env=env)
    assert proc.returncode == 0, proc.stderr
    calls = [line.rstrip("\t").split("\t") for line in record.read_text().splitlines()]
    assert len(calls) == 7  # abl-baseline, the 5 ablations, the report

    def opt(call, name):
        return call[call.index(name) + 1] if name in call else next(
            (a.split("=", 1)[1] for a in call if a.startswith(name + "=")), None)

    base = calls[0]
    assert opt(base, "--job-name") == "abl-baseline" and opt(base, "--array") == "2"
    assert opt(base, "--dependency") is None and "--parsable" in base
    assert base[-2:] == [str(REPO / "scripts" / "slurm" / "experiment.sbatch"), "segmentation/abl-baseline.sh"]
    assert opt(base, "--output") == f"{runs}/logs/%x-%a.log" and f"RUNS_DIR={runs}" in opt(base, "--export")
    assert opt(base, "--partition") == "gpu"
    for call, name in zip(calls[1:6], ("abl-cbst", "abl-dst", "abl-naive", "abl-flip", "abl-online")):
        assert (opt(call, "--job-name"), opt(call, "--array"), opt(call, "--dependency")) == (name, "2", "afterok:1001")
        assert call[-1] == f"segmentation/{name}.sh"
    report = calls[6]
    assert opt(report, "--dependency") == "afterany:" + ":".join(str(1001 + k) for k in range(6))
    assert "--report-only" in opt(report, "--wrap") and str(runs) in opt(report, "--wrap")
    assert (runs / "logs").is_dir()  # SLURM does not make the --output folder

    record.unlink()
    proc = reproduce("cifar10", "--splits", "1", "2", "--slurm", "--out", str(runs), env=env)
    assert proc.returncode == 0, proc.stderr
    calls = [line.rstrip("\t").split("\t") for line in record.read_text().splitlines()]
    assert [(opt(c, "--job-name"), opt(c, "--array"), opt(c, "--dependency")) for c in calls[:2]] == [
        ("cl-c10-4000", "1,2", None), ("dmt-c10-4000", "1,2", "afterok:1001")]


def test_sbatch_template_parses_and_runs_one_array_task(tmp_path):
    template = REPO / "scripts" / "slurm" / "experiment.sbatch"
    assert subprocess.run(["bash", "-n", str(template)]).returncode == 0
    header = [line for line in template.read_text().splitlines() if line.startswith("#SBATCH")]
    assert any("--gpus" in h for h in header) and any("--time" in h for h in header)
    assert any("--output" in h for h in header)
    # the task runs the script with its array index as the split id, OUT etc. as reproduce.sh sets them
    fake = tmp_path / "abl-cbst.sh"
    fake.write_text('echo "id=$1 OUT=$OUT BASELINE_OUT=$BASELINE_OUT"\n')
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2", "SLURM_JOB_ID": "77", "DMT_REPO": str(REPO),
           "RUNS_DIR": str(tmp_path / "runs"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(template), str(fake)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    runs = tmp_path / "runs"
    assert proc.stdout.splitlines()[-1] == f"id=2 OUT={runs}/abl-cbst-2 BASELINE_OUT={runs}/abl-baseline-2"
    proc = subprocess.run(["bash", str(template)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


# ------------------------------------------------------------------------- a tiny real table
TINY = {"DEVICE": "cpu", "WORKERS": "0", "BASE_EPOCHS": "1", "BASE_BATCH": "10", "PHASE_EPOCHS": "1",
        "BATCH_PSEUDO": "16", "BATCH_LABELED": "4", "LABEL_BATCH": "32", "PHASE_VAL": "2", "AMP": "0",
        "RATIOS": "1.0", "LABELS_PER_CLASS": "1"}


@pytest.mark.slow
def test_tiny_cifar_table_on_two_cpu_slots(tmp_path):
    from classification import generate_splits
    from data.synthetic import make_cifar10
    root = tmp_path / "cifar"
    make_cifar10(root, num_train_per_class=8, num_test_per_class=2)
    generate_splits.main(["--root", str(root), "--sizes", "1", "--seeds", "1", "2", "--val-size", "3"])
    runs = tmp_path / "runs"
    proc = reproduce("cifar10-1000", "--splits", "1", "2", "--slots", "2", "--out", str(runs),
                     env={**TINY, "DATA_ROOT": str(root)}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # DMT reused the phase 0 of the finished CL run of its seed (so it ran after it)
    for seed in (1, 2):
        adopted = runs / f"dmt-c10-1000-{seed}" / f"dmt-c10-1000-{seed}__p0.adopted"
        assert adopted.read_text().strip() == str(runs / f"cl-c10-1000-{seed}" / f"cl-c10-1000-{seed}__p0--ema.pt")
    slots = {re.search(r"\(slot (\d)", (runs / "logs" / f"cl-c10-1000-{s}.log").read_text())[1] for s in (1, 2)}
    assert slots == {"0", "1"}
    report = (runs / "report-cifar10-1000.md").read_text()
    for experiment in ("cl-c10-1000", "dmt-c10-1000"):
        for seed in (1, 2):
            log = {name: value for name, value, _ in
                   map(parse_log_line, (runs / f"{experiment}-{seed}" / "log.txt").read_text().splitlines())}
            p0, p1 = log[f"{experiment}-{seed}__p0--test"], log[f"{experiment}-{seed}__p1--test"]
            row = (f"| {experiment} | {seed} | ok | {p0:.2f} | p1 | {p1:.2f} | "
                   f"`{runs}/logs/{experiment}-{seed}.log` |")
            assert row in report, report
        assert f"### {experiment}" in report  # utils.report's own table follows
    assert re.search(r"\| `p1--test` \| accuracy \| test \| [^|]+ \| 2 \| 1, 2 \|", report)
