"""Every segmentation experiment script end to end on tiny synthetic VOC / Cityscapes data, through
the scripts' environment overrides (MobileNet backbone, random init, 33² crops, one epoch, CPU).

dmt-voc-20.sh runs all 5 phases (2 baselines, 10 labelling passes, 10 trainings); the other scripts
run one phase (RATIOS). The checks follow docs/method.md §1.1/§1.3/§1.4 and §7.3: who labels for whom, which
snapshot each run starts from, seeds, input conventions, losses, ratios, file formats and log.txt
lines. Scripts run two at a time (one process each; the machine has two cores).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from data.synthetic import make_cityscapes, make_voc
from segmentation.cityscapes_lists import list_split
from segmentation.generate_splits import id_list_text
from segmentation.models import deeplab_v2
from utils.checkpoint import save_checkpoint
from utils.run_log import parse_log_line

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "segmentation"
VOC_RATIOS = ["0.2", "0.4", "0.6", "0.8", "1.0"]
COST_FIELDS = {"final", "protocol", "wall_s", "images_per_s", "peak_mem_gb", "device", "procs"}

# script -> (split id, extra environment); run in this order by two workers, abl-* in sequence.
GROUPS = [
    [("dmt-voc-20", 1, {}), ("dmt-voc-20", 1, {"RERUN": "1"})],
    [("dmt-city-8", 1, {"RATIOS": "0.5"}), ("dmt-city-30", 1, {"RATIOS": "1.0"}), ("dmt-voc-sbd", 0, {"RATIOS": "1.0"})],
    [("abl-baseline", 2, {}), ("abl-cbst", 2, {"RATIOS": "0.5"}), ("abl-dst", 2, {"RATIOS": "1.0"}),
     ("abl-naive", 2, {"RATIOS": "1.0"}), ("abl-flip", 2, {"RATIOS": "0.5"}), ("abl-online", 2, {})],
    [("dmt-voc-106", 1, {"RATIOS": "0.5"}), ("dmt-voc-50", 1, {"RATIOS": "1.0"}), ("dmt-voc-8", 1, {"RATIOS": "1.0"})],
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("seg-scripts")
    voc = make_voc(base / "voc", num_train=16, num_val=3, size_range=(30, 40), seed=0)
    sets = voc / "ImageSets" / "Segmentation"
    ids = (sets / "trainaug.txt").read_text().split()
    for sid in range(3):
        for factor in ("8", "20", "50", "106"):  # the factors dms_sample reads
            (sets / f"{factor}_labeled_{sid}.txt").write_text(id_list_text(ids[4 * sid:4 * sid + 4]))
            (sets / f"{factor}_unlabeled_{sid}.txt").write_text(id_list_text(ids[:4 * sid] + ids[4 * sid + 4:]))
    (sets / "1_labeled_0.txt").write_text(id_list_text(ids))
    city = make_cityscapes(base / "city", num_train=12, num_val=3, size=(32, 64), seed=0)
    lists = city / "data_lists"
    lists.mkdir()
    train = list_split(city, "train")
    (lists / "train.txt").write_text(id_list_text(train))
    (lists / "val.txt").write_text(id_list_text(list_split(city, "val")))
    for factor in ("8", "30"):
        (lists / f"{factor}_labeled_1.txt").write_text(id_list_text(train[:4]))
        (lists / f"{factor}_unlabeled_1.txt").write_text(id_list_text(train[4:]))
    coco = base / "voc_coco_tiny.pt"  # stands in for the converted COCO checkpoint
    save_checkpoint(coco, model=deeplab_v2(21, "mobilenet_v3_large", pretrained=None))
    return {"voc": voc, "city": city, "coco": coco, "runs": base / "runs"}


def run_script(name: str, sid: int, extra: dict, data: dict) -> dict:
    env = {**os.environ, "DATA_ROOT": str(data["city"] if "city" in name else data["voc"]),
           "OUT": str(data["runs"] / f"{name}-{sid}"), "BASELINE_OUT": str(data["runs"] / f"abl-baseline-{sid}"),
           "BACKBONE": "mobilenet_v3_large", "PRETRAINED": "none", "DEVICE": "cpu", "WORKERS": "0",
           "CROP": "24 48" if "city" in name else "33 33", "TEST_SIZE": "32 64" if "city" in name else "41 41",
           "BASE_EPOCHS": "1", "PHASE_EPOCHS": "1", "ORACLE_EPOCHS": "1", "EPOCHS": "1", "BASE_BATCH": "4",
           "OMP_NUM_THREADS": "1", "DMT_NO_PROGRESS": "1", **extra}
    if name == "dmt-voc-20":
        env["COCO_INIT"] = str(data["coco"])
    env.pop("RERUN", None)
    start = time.perf_counter()
    proc = subprocess.run(["bash", str(SCRIPTS / f"{name}.sh"), str(sid)], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=900)
    return {"proc": proc, "seconds": time.perf_counter() - start, "out": Path(env["OUT"])}


@pytest.fixture(scope="module")
def runs(data) -> dict[str, dict]:
    results: dict[str, dict] = {}

    def run_group(group):
        for name, sid, extra in group:
            key = name + ("@rerun" if extra.get("RERUN") else "")
            results[key] = run_script(name, sid, extra, data)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(run_group, GROUPS))
    return results


def finished(runs: dict, key: str) -> Path:
    result = runs[key]
    proc = result["proc"]
    assert proc.returncode == 0, f"{key} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return result["out"]


def log_of(out: Path) -> dict[str, tuple[float, dict[str, str]]]:
    entries = [parse_log_line(line) for line in (out / "log.txt").read_text().splitlines()]
    names = [e[0] for e in entries]
    assert len(names) == len(set(names)), f"duplicated log lines: {names}"
    for name, best, fields in entries:
        assert COST_FIELDS <= set(fields) and fields["protocol"] == "whole" and 0 <= best <= 100, (name, fields)
    return {name: (best, fields) for name, best, fields in entries}


def cfg(out: Path, run: str) -> dict:
    return json.loads((out / f"{run}_cfg.json").read_text())


def labelling(out: Path, labeller: str, target: str) -> dict:
    folder = out / "pseudo" / f"{labeller}-for-{target}"
    record = json.loads((folder / "labeling.json").read_text())
    assert record["key"]["labeller"]["path"] == str(out / f"{labeller}.pt")
    return record


def check_pseudo_files(folder: Path, num_classes: int, sizes: dict[str, tuple[int, int]], fp16: bool) -> int:
    files = sorted(folder.rglob("*.npy"))
    assert files
    for path in files:
        arr = np.load(path)
        sample_id = str(path.relative_to(folder))[: -len(".npy")]
        assert arr.dtype == np.float32 and arr.shape == sizes[sample_id] + (2,), (path, arr.shape)
        labels, conf = arr[..., 0], arr[..., 1]
        assert np.isin(labels, list(range(num_classes)) + [255]).all()
        assert (conf >= 0).all() and (conf <= 1).all()
        if fp16:
            np.testing.assert_array_equal(conf.astype(np.float16).astype(np.float32), conf)
    return len(files)


def voc_sizes(voc: Path) -> dict[str, tuple[int, int]]:
    from PIL import Image
    return {p.stem: Image.open(p).size[::-1] for p in (voc / "JPEGImages").glob("*.jpg")}


def check_mutual_phases(out: Path, exp: str, a: str, b: str, ratios: list[str], seeds: dict[str, int],
                        coco: dict[str, bool], train_set: str, loss: str = "dmt", label_fp32: bool = True) -> None:
    """docs/method.md §1.1/§1.3: phase k labels with p{k-1}--B for A and p{k-1}--A for B; A and B continue
    from their own previous phase; both on the same labelled set. Labelling is fp32 by default here:
    the scripts' AMP default is 0 on CPU."""
    for k, ratio in enumerate(ratios, start=1):
        for model, other in ((a, b), (b, a)):
            run, prev_self, prev_other = (f"{exp}__p{k}--{model}", f"{exp}__p{k - 1}--{model}",
                                          f"{exp}__p{k - 1}--{other}")
            record = labelling(out, prev_other, run)
            assert record["key"]["label_ratio"] == float(ratio)
            assert record["key"]["coco"] == coco[other]  # the labeller's own input convention
            assert record["key"]["mixed_precision"] == (not label_fp32)
            c = cfg(out, run)
            assert c["state"] == 1 and c["continue_from"] == str(out / f"{prev_self}.pt")
            assert c["pseudo_dir"] == str(out / "pseudo" / f"{prev_other}-for-{run}")
            assert (c["seed"], c["coco"], c["train_set"], c["loss"]) == (seeds[model], coco[model], train_set, loss)


# ---------------------------------------------------------------------------------------- tests
def test_dmt_voc_20_runs_five_phases(runs, data):
    out = finished(runs, "dmt-voc-20")
    exp = "dmt-voc-20-1"
    log = log_of(out)
    assert set(log) == {f"{exp}__p{k}--{m}" for k in range(6) for m in "ci"}
    assert log[f"{exp}__p1--c"][1]["iters"] == "2"  # ⌈12 pseudo images / 7⌉ × 1 epoch
    base_c, base_i = cfg(out, f"{exp}__p0--c"), cfg(out, f"{exp}__p0--i")
    assert (base_c["state"], base_c["continue_from"], base_c["coco"], base_c["seed"]) == (2, str(data["coco"]), True, 1)
    assert (base_i["state"], base_i["continue_from"], base_i["coco"], base_i["seed"]) == (2, None, False, 2)
    assert base_c["train_set"] == "20" and base_c["sets_id"] == 1 and base_c["batch_size_labeled"] == 4
    check_mutual_phases(out, exp, "c", "i", VOC_RATIOS, {"c": 1, "i": 2}, {"c": True, "i": False}, "20")
    phase = cfg(out, f"{exp}__p3--i")
    assert (phase["lr"], phase["gamma1"], phase["gamma2"], phase["batch_size_labeled"], phase["batch_size_pseudo"],
            phase["mixed_precision"]) == (0.001, 5.0, 5.0, 1, 7, False)  # AMP defaults to 0 on CPU
    folders = sorted((out / "pseudo").iterdir())
    assert len(folders) == 10
    sizes = voc_sizes(data["voc"])
    for folder in folders:
        assert check_pseudo_files(folder, 21, sizes, fp16=False) == 12
    stderr = runs["dmt-voc-20"]["proc"].stderr
    assert "COCO_INIT is empty" not in stderr
    assert stderr.count("note: AMP=0 (fp32) on CPU") == 1  # the default, said once


def test_rerun_of_a_finished_script_skips_every_step(runs):
    out = finished(runs, "dmt-voc-20@rerun")
    stdout = runs["dmt-voc-20@rerun"]["proc"].stdout
    assert stdout.count("already finished") == 12 and stdout.count("already labelled") == 10
    assert len((out / "log.txt").read_text().splitlines()) == 12
    assert runs["dmt-voc-20@rerun"]["seconds"] < runs["dmt-voc-20"]["seconds"] / 4


@pytest.mark.parametrize("name,train_set,base_epochs", [("dmt-voc-50", "50", 212), ("dmt-voc-8", "8", 85)])
def test_dmt_voc_other_ratios(runs, data, name, train_set, base_epochs):
    out = finished(runs, name)
    exp = f"{name}-1"
    assert set(log_of(out)) == {f"{exp}__p{k}--{m}" for k in range(2) for m in "ci"}
    check_mutual_phases(out, exp, "c", "i", ["1.0"], {"c": 1, "i": 2}, {"c": True, "i": False}, train_set)
    assert "COCO_INIT is empty" in runs[name]["proc"].stderr
    script = (SCRIPTS / f"{name}.sh").read_text()
    assert f"BASE_EPOCHS=${{BASE_EPOCHS:-{base_epochs}}}" in script  # the dst-cbc schedule (docs/method.md §7.3)


def test_dmt_voc_106_difference_maximised_sampling(runs, data):
    out = finished(runs, "dmt-voc-106")
    exp = "dmt-voc-106-1"
    assert set(log_of(out)) == {f"{exp}__p{k}--{m}" for k in range(2) for m in "lr"}
    sets = data["voc"] / "ImageSets" / "Segmentation"
    left, right = ((sets / f"106-{s}_labeled_1.txt").read_text().split() for s in "lr")
    assert len(left) == len(right) == 3 and len(set(left) & set(right)) == 2  # 4 ids, ceil(0.2·4) = 1 exclusive
    assert (cfg(out, f"{exp}__p0--l")["train_set"], cfg(out, f"{exp}__p0--l")["seed"]) == ("106-l", 1)
    assert (cfg(out, f"{exp}__p0--r")["train_set"], cfg(out, f"{exp}__p0--r")["seed"]) == ("106-r", 2)
    check_mutual_phases(out, exp, "l", "r", ["0.5"], {"l": 2, "r": 1}, {"l": True, "r": True}, "106")


@pytest.mark.parametrize("name,ratios", [("dmt-city-8", ["0.5"]), ("dmt-city-30", ["1.0"])])
def test_dmt_city(runs, data, name, ratios):
    out = finished(runs, name)
    exp = f"{name}-1"
    assert set(log_of(out)) == {f"{exp}__p{k}--{m}" for k in range(2) for m in "ci"}
    check_mutual_phases(out, exp, "c", "i", ratios, {"c": 1, "i": 2}, {"c": True, "i": False}, name.split("-")[-1])
    phase = cfg(out, f"{exp}__p1--c")
    assert (phase["dataset"], phase["lr"], phase["gamma1"], phase["batch_size_labeled"],
            phase["batch_size_pseudo"]) == ("city", 0.004, 3.0, 2, 6)
    train = (data["city"] / "data_lists" / "train.txt").read_text().split()
    sizes = {i: (32, 64) for i in train}  # City labels at the labeller's (test) size
    folder = out / "pseudo" / f"{exp}__p0--i-for-{exp}__p1--c"
    assert check_pseudo_files(folder, 19, sizes, fp16=False) == 8


def test_dmt_voc_sbd_oracle_and_phases(runs, data):
    out = finished(runs, "dmt-voc-sbd")
    exp = "dmt-voc-sbd-0"
    assert set(log_of(out)) == {f"{exp}__oracle"} | {f"{exp}__p{k}--{m}" for k in range(2) for m in "ci"}
    oracle = cfg(out, f"{exp}__oracle")
    assert (oracle["train_set"], oracle["seed"], oracle["state"]) == ("1", 0, 2)
    sets = data["voc"] / "ImageSets" / "Segmentation"
    assert (sets / "train_labeled_0.txt").read_text().split() == (sets / "train.txt").read_text().split()
    assert cfg(out, f"{exp}__p0--c")["train_set"] == "train"
    check_mutual_phases(out, exp, "c", "i", ["1.0"], {"c": 1, "i": 2}, {"c": True, "i": False}, "train")


def test_ablation_baselines(runs):
    out = finished(runs, "abl-baseline")
    exp = "abl-baseline-2"
    assert set(log_of(out)) == {f"{exp}__p0--{m}" for m in "clr"}
    assert [(cfg(out, f"{exp}__p0--{m}")["train_set"], cfg(out, f"{exp}__p0--{m}")["seed"]) for m in "clr"] == \
        [("50", 1), ("50-l", 1), ("50-r", 2)]


@pytest.mark.parametrize("name,gamma,ratio", [("abl-cbst", 0.0, "0.5"), ("abl-dst", 5.0, "1.0")])
def test_self_training_ablations(runs, name, gamma, ratio):
    out = finished(runs, name)
    exp = f"{name}-2"
    assert set(log_of(out)) == {f"{exp}__p1--c"}
    assert (out / f"{exp}__p0--c.pt").read_bytes() == \
        (runs["abl-baseline"]["out"] / "abl-baseline-2__p0--c.pt").read_bytes()
    record = labelling(out, f"{exp}__p0--c", f"{exp}__p1--c")  # c labels for itself
    assert record["key"]["label_ratio"] == float(ratio)
    c = cfg(out, f"{exp}__p1--c")
    assert (c["gamma1"], c["gamma2"], c["continue_from"], c["seed"]) == (gamma, gamma, str(out / f"{exp}__p0--c.pt"), 1)


@pytest.mark.parametrize("name,loss,ratio,fp32", [("abl-naive", "naive", "1.0", True), ("abl-flip", "flip", "0.5", False)])
def test_mutual_ablations(runs, name, loss, ratio, fp32):
    out = finished(runs, name)
    exp = f"{name}-2"
    assert set(log_of(out)) == {f"{exp}__p1--{m}" for m in "lr"}
    check_mutual_phases(out, exp, "l", "r", [ratio], {"l": 2, "r": 1}, {"l": True, "r": True}, "50", loss=loss,
                        label_fp32=fp32)


def test_online_ablation(runs):
    out = finished(runs, "abl-online")
    exp = "abl-online-2"
    log = log_of(out)
    assert set(log) == {f"{exp}__p1--c"}
    c = cfg(out, f"{exp}__p1--c")
    assert (c["loss"], c["online_threshold"], c["online_double_step"], c["continue_from"]) == \
        ("online", 0.9, True, str(out / f"{exp}__p0--c.pt"))
    assert not (out / "pseudo").exists()


def test_every_script_is_tested_and_uses_the_shared_loops():
    scripts = {p.stem for p in SCRIPTS.glob("*.sh")} - {"dmt_lib"}
    assert scripts == {name for group in GROUPS for name, _, _ in group}
    for name in scripts:
        text = (SCRIPTS / f"{name}.sh").read_text()
        assert "for ratio in" not in text and 'source "$(dirname "$0")/dmt_lib.sh"' in text
