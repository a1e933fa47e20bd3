"""The classification speed benchmark at its tiniest on CPU: what it reports and the run projection's
counts (docs/method.md §2.2, §7.2) worked out by hand; speeds are reported, never asserted."""
import json
import math

import pytest

from bench import classification as bench
from bench.run_projection import validation_passes
from utils.errors import run_cli

TINY = ["--device", "cpu", "--steps", "1", "--warmup", "0", "--batch-pseudo", "3", "--batch-labelled", "1",
        "--baseline-batch", "4", "--threads", "1", "--workers", "0", "--pil-images", "8", "--aug-batch", "16",
        "--aug-batches", "1", "--eval-images", "4", "--eval-batch", "4"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "cls.json"
    result = bench.main(TINY + ["--json", str(out)])
    return result, json.loads(out.read_text())


def test_json_holds_every_measurement(tiny_run):
    result, written = tiny_run
    assert written.keys() == result.keys()
    aug = written["augmentation"]
    assert aug["pil_per_worker"] > 0 and aug["pil_loader"] is None and aug["batched_device"] is None
    assert aug["batched_loader"] is None and written["load_average_1min"] is not None
    (row,) = aug["batched_cpu"]
    assert row["threads"] == 1 and row["device"] == "cpu"
    assert row["vs_pil"] == pytest.approx(row["images_per_s"] / aug["pil_per_worker"])
    # loader part and transform in series: 1/total = 1/loader + 1/transform
    assert 1 / row["images_per_s"] == pytest.approx(1 / row["loader_images_per_s"] + 1 / row["transform_images_per_s"])
    rows = written["training"]
    assert [(r["variant"], r["step"], r["batch"], r["settings"]) for r in rows] == [
        ("original-style", "dmt", 4, "fp32 NCHW"), ("original-style", "baseline", 4, "fp32 NCHW"),
        ("ours", "dmt", 4, "fp32 NCHW"), ("ours", "baseline", 4, "fp32 NCHW")]
    for r in rows:
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1000 / r["ms_per_it"])
    assert written["eval_images_per_s"] > 0


def test_phase_lengths_are_the_scripts():
    # §7.2: 20/40/60/79/99 iterations per epoch at 1,000 labels (48,800 unlabelled: 9,758 ... 48,800 kept)
    assert [bench.C10_1000.kept(r) for r in bench.C10_1000.ratios] == [9758, 19518, 29278, 39038, 48800]
    assert bench.C10_1000.phase_iters() == [750 * n for n in (20, 40, 60, 79, 99)]
    # 4,000 labels: 45,800 unlabelled, kept rN − 2 = 9,158 / 18,318 / 27,478 / 36,638 / all → ⌈kept / 496⌉
    assert bench.C10_4000.phase_iters() == [750 * n for n in (19, 37, 56, 74, 93)]


def test_projection_is_the_counts_times_the_measured_rates(tiny_run):
    _, written = tiny_run
    aug, rows = written["augmentation"], {(r["variant"], r["step"]): r for r in written["training"]}
    eval_rate = written["eval_images_per_s"]
    proj = written["projection"]["CIFAR-10 1,000 labels (dmt-c10-1000)"]["columns"]
    iters = sum(750 * n for n in (20, 40, 60, 79, 99))
    transform_s = 1 / aug["batched_cpu"][0]["transform_images_per_s"]  # per image
    dmt_s = rows[("ours", "dmt")]["ms_per_it"] / 1000 * 512 / 4 + 512 * transform_s
    base_s = rows[("ours", "baseline")]["ms_per_it"] / 1000 * 512 / 4 + 512 * transform_s
    ours = proj["ours (batched augmentation)"]
    assert ours["phases_s"] == pytest.approx(iters * dmt_s)
    assert ours["baseline_s"] == pytest.approx(4240 * base_s)
    assert ours["labelling_s"] == pytest.approx(5 * 48_800 / eval_rate)
    # validations: baseline at 999, 1999, 2999, 3999, 4239 + final = 6 passes on test; each phase
    # ⌊T/1000⌋ (+1 for T − 1) + final + initial + EMA on valtiny; 1 + 5 EMA tests and the baseline's EMA
    phase_passes = sum(validation_passes(750 * n, 1000) + 2 for n in (20, 40, 60, 79, 99))
    assert validation_passes(4240, 1000) == 6 and validation_passes(15000, 1000) == 16
    images = 6 * 10_000 + phase_passes * 200 + 10_000 + 6 * 10_000
    assert ours["evaluation_s"] == pytest.approx(images / eval_rate)
    # original-style: PIL with 3 pseudo workers caps a phase iteration at 496 / (3 × rate)
    orig = proj["original-style"]
    step_s = rows[("original-style", "dmt")]["ms_per_it"] / 1000 * 512 / 4
    assert orig["phases_s"] == pytest.approx(iters * max(step_s, 496 / (3 * aug["pil_per_worker"])))
    for column in proj.values():
        parts = ("baseline_s", "phases_s", "labelling_s", "evaluation_s")
        assert column["total_s"] == pytest.approx(sum(column[p] for p in parts))
    assert math.isfinite(orig["total_s"])


def test_printed_tables(tiny_run, capsys):
    assert run_cli(bench.main, TINY + ["--skip-training"]) == 0
    out = capsys.readouterr().out
    assert "| PIL (crop, flip, RandAugment, normalise), 1 thread | 1 |" in out
    assert "batched on the CPU (loader part + transform), 1 thread(s)" in out and "Projected" not in out


@pytest.mark.parametrize("flag,value", [("--variants", "fp64"), ("--threads", "0"), ("--aug-batch", "0")])
def test_bad_flags_are_one_line(flag, value, capsys):
    assert run_cli(bench.main, ["--device", "cpu", flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]
