"""The segmentation speed benchmark runs at its tiniest setting on CPU and reports what it promises:
the side-by-side table, the ratio, labelling/evaluation/input-pipeline rates and the run projection
(speed is reported, never asserted)."""
import json

import pytest
import torch

from bench import segmentation as bench
from bench.input_pipeline import workers_needed
from bench.run_projection import CITY_8, VOC_20, project, validation_passes
from utils.errors import run_cli



def tiny(setting: str = "both", pipeline_images: int = 3) -> list[str]:
    return ["--device", "cpu", "--backbone", "mobilenet_v3_large", "--setting", setting, "--size-scale", "0.1",
            "--iters", "1", "--warmup", "0", "--label-images", "8", "--eval-images", "8",
            "--pipeline-images", str(pipeline_images)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out_file = tmp / "speed.json"
    result = bench.main(tiny() + ["--pipeline-root", str(tmp / "voc"), "--json", str(out_file)])
    return result, json.loads(out_file.read_text())


def test_json_holds_every_measurement(tiny_run):
    result, written = tiny_run
    assert written["settings"].keys() == result["settings"].keys() == {"voc", "city"}
    assert written["device"] == "cpu" and written["peak_tflops"] is None
    for name, res in written["settings"].items():
        assert res["crop"] == ([32, 32] if name == "voc" else [26, 51])  # round(321·0.1), round(256·0.1)×round(512·0.1)
        for step, layout in (("supervised", "8"), ("dmt", "7+1" if name == "voc" else "6+2")):
            entry = res["train"][step]
            assert entry["batch_layout"] == layout
            assert [r["variant"] for r in entry["rows"]] == ["reference", "ours"]
            ref, ours = entry["rows"]
            assert ref["settings"] == "fp32 NCHW"  # no fp16 autocast on CPU
            assert ours["settings"] == "bf16 NCHW"  # the project's CPU defaults
            for row in entry["rows"]:
                assert row["batch"] == 8
                assert row["images_per_s"] == pytest.approx(8000 / row["ms_per_it"])
                assert row["tflop_per_it"] > 0 and row["mfu"] is None and row["peak_mem_gib"] is None
            assert ref["tflop_per_it"] == pytest.approx(ours["tflop_per_it"])  # same model, same shapes
            assert entry["speedup"] == pytest.approx(ref["ms_per_it"] / ours["ms_per_it"])
        for key in ("labelling", "evaluation"):
            assert [r["images"] for r in res[key]["rows"]] == ([8, 8, 8] if key == "labelling" else [8, 8])
            assert all(r["images_per_s"] > 0 for r in res[key]["rows"])
        rows = res["labelling"]["rows"]
        assert [(r["variant"], r["passes"]) for r in rows] == [("reference", 2), ("ours", 1), ("ours", 2)]
        assert res["labelling"]["one_pass_speedup"] == pytest.approx(rows[1]["images_per_s"] / rows[2]["images_per_s"])
    pipeline = written["input_pipeline"]
    assert pipeline["crop"] == [321, 321] and pipeline["images"] == 3
    for key in ("labelled_per_worker", "pseudo_per_worker", "labelled_decode_per_worker", "pseudo_decode_per_worker"):
        assert pipeline[key] > 0, key


def test_projection_is_the_script_counts_times_the_measured_rates(tiny_run):
    _, written = tiny_run
    # validations by hand: VOC baseline s = 219, 439, …, 8799 (40) + 8977 + final = 42;
    # phase 499 … 5499 (11) + 5743 + final = 13 → 2·42 + 10·13 = 214. City: 2·24 + 10·16 = 208.
    for name, evaluations, unlabelled, val_images, base_it, phase_it in (
            ("voc", 214, 10_052, 1449, 8978, 5744), ("city", 208, 2604, 500, 7990, 4340)):
        res = written["settings"][name]
        for i, variant in enumerate(("reference", "ours")):
            sup_ms = res["train"]["supervised"]["rows"][i]["ms_per_it"]
            dmt_ms = res["train"]["dmt"]["rows"][i]["ms_per_it"]
            label_rate = res["labelling"]["rows"][i]["images_per_s"]
            eval_rate = res["evaluation"]["rows"][i]["images_per_s"]
            expected = (2 * base_it * sup_ms / 1000 + 10 * phase_it * dmt_ms / 1000
                        + 10 * unlabelled / label_rate + evaluations * val_images / eval_rate)
            proj = res["projection"][variant]
            assert proj["evaluations"] == evaluations
            assert proj["total_s"] == pytest.approx(expected)
        proj = res["projection"]
        assert proj["speedup"] == pytest.approx(proj["reference"]["total_s"] / proj["ours"]["total_s"])


def test_report_tables(tiny_run):
    result, _ = tiny_run
    lines = bench.training_table(result["settings"])
    assert lines[0].startswith("| setting | step | batch | crop | variant |") and "| MFU |" in lines[0]
    assert len(lines) == 2 + 2 * 2 * 2  # header + separator + 2 settings × 2 steps × 2 variants
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert any("| voc | dmt | 7+1 | 32×32 | ours | bf16 NCHW |" in line for line in lines)
    rates = bench.throughput_table(result["settings"], result["input_pipeline"])
    assert sum("labelling" in line for line in rates) == 6 and sum("evaluation" in line for line in rates) == 4
    assert sum("input pipeline" in line for line in rates) == 4
    projection = bench.projection_table(result["settings"])
    assert sum("| total |" in line for line in projection) == 2
    assert any(line.startswith("| VOC 1/20 DMT") for line in projection)
    workers = bench.workers_lines(result["settings"], result["input_pipeline"])
    assert [w.split(" at ")[0] for w in workers] == ["- voc dmt", "- voc supervised"]


def test_main_prints_the_markdown_report(capsys):
    bench.main(tiny("voc", pipeline_images=0))
    out = capsys.readouterr().out
    assert "| voc | supervised | 8 | 32×32 | reference | fp32 NCHW |" in out
    assert "ours/reference (training step speed): voc supervised " in out
    assert "| voc | labelling (2 passes + CBC + .npy) | 50×50 | 8 | ours | bf16 NCHW |" in out
    assert "| voc | labelling (1 pass + CBC + .npy) | 50×50 | 8 | ours | bf16 NCHW |" in out
    assert "labelling, ours one pass / two passes (same run): voc " in out
    assert "| VOC 1/20 DMT (dmt-voc-20-1) | baselines | 2 × 8,978 it |" in out
    assert "input pipeline" not in out and "city" not in out


def test_validation_passes_by_hand():
    assert validation_passes(10, 3) == 5  # s = 2, 5, 8, 9 (L − 1) + final
    assert validation_passes(9, 3) == 4   # s = 2, 5, 8 (also L − 1) + final
    assert validation_passes(1, 500) == 1  # only the final evaluation
    assert validation_passes(10, 3, final=False) == 4


def test_projection_formula_on_round_numbers():
    proj = project(VOC_20, supervised_ms=100.0, dmt_ms=200.0, labelling_images_per_s=100.0,
                   eval_images_per_s=50.0)
    assert proj["baselines_s"] == pytest.approx(2 * 8978 * 0.1)
    assert proj["phases_s"] == pytest.approx(10 * 5744 * 0.2)
    assert proj["labelling_s"] == pytest.approx(10 * 10_052 / 100)
    assert proj["evaluation_s"] == pytest.approx(214 * 1449 / 50)
    assert project(CITY_8, 1.0, 1.0, 1.0, 1.0)["evaluations"] == 208


def test_peak_table_and_workers(monkeypatch):
    assert bench.peak_tflops(torch.device("cpu"), None)[0] is None
    assert bench.peak_tflops(torch.device("cpu"), 12.5)[0] == 12.5
    for name, peak in (("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4),
                       ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.1), ("NVIDIA L4", 121.0),
                       ("Tesla V100-SXM2-16GB", None)):
        monkeypatch.setattr(bench, "device_name", lambda _device, n=name: n)
        assert bench.peak_tflops(torch.device("cuda"), None)[0] == peak, name
    assert workers_needed(100.0, 30.0) == 4 and workers_needed(10.0, 30.0) == 1
    assert workers_needed(90.0, 30.0) == 3


@pytest.mark.parametrize("flag, value", [("--size-scale", "0"), ("--iters", "0"), ("--warmup", "-1"),
                                         ("--label-images", "0"), ("--peak-tflops", "-5")])
def test_bad_input_is_one_clear_line(flag, value, capsys):
    assert run_cli(bench.main, ["--device", "cpu", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} ") and "out of range" in err and err.count("\n") == 1
