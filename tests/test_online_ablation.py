"""The online ablation (``--loss online``, docs/method.md §3.2) reads no label of an unlabelled image:
it trains with the unlabelled images' label files deleted."""
from __future__ import annotations

from pathlib import Path

from segmentation.main import main
from tests.helpers import seg_main_argv, voc_with_split
from utils.errors import run_cli


def test_online_training_needs_no_label_of_an_unlabelled_image(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")
    root = voc_with_split(tmp_path / "voc", labelled=2, num_train=8, num_val=2, size_range=(30, 34), seed=0)
    ids = (root / "ImageSets" / "Segmentation" / "trainaug.txt").read_text().split()
    for sample_id in ids[2:]:
        (root / "SegmentationClassAug" / f"{sample_id}.png").unlink()
    out = tmp_path / "out"
    argv = seg_main_argv(root, out, "--state", "1", "--loss", "online", "--exp-name", "online", "--epochs", "1",
                         "--batch-size-pseudo", "3", "--batch-size-labeled", "1")
    assert run_cli(main, argv) == 0, capsys.readouterr().err
    line = Path(out / "log.txt").read_text()
    assert line.startswith("online: ") and "iters=2" in line  # ⌈6 unlabelled / 3⌉
