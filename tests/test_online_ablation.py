"""The online ablation (``--loss online``, docs/method.md §3.2) reads no label of an unlabelled image:
it trains with the unlabelled images' label files deleted."""
from __future__ import annotations

from pathlib import Path

from data.synthetic import make_voc
from segmentation.generate_splits import id_list_text
from segmentation.main import main
from utils.errors import run_cli


def test_online_training_needs_no_label_of_an_unlabelled_image(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")
    root = make_voc(tmp_path / "voc", num_train=8, num_val=2, size_range=(30, 34), seed=0)
    lists = root / "ImageSets" / "Segmentation"
    ids = (lists / "trainaug.txt").read_text().split()
    (lists / "20_labeled_0.txt").write_text(id_list_text(ids[:2]))
    (lists / "20_unlabeled_0.txt").write_text(id_list_text(ids[2:]))
    for sample_id in ids[2:]:
        (root / "SegmentationClassAug" / f"{sample_id}.png").unlink()
    out = tmp_path / "out"
    argv = ["--data-root", str(root), "--out-dir", str(out), "--backbone", "tiny", "--pretrained", "none",
            "--crop-size", "33", "33", "--test-size", "41", "41", "--device", "cpu", "--workers", "0",
            "--train-set", "20", "--sets-id", "0", "--state", "1", "--loss", "online", "--exp-name", "online",
            "--epochs", "1", "--batch-size-pseudo", "3", "--batch-size-labeled", "1"]
    assert run_cli(main, argv) == 0, capsys.readouterr().err
    line = Path(out / "log.txt").read_text()
    assert line.startswith("online: ") and "iters=2" in line  # ⌈6 unlabelled / 3⌉
