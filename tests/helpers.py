"""What several test files do the same way: tiny synthetic data sets with their split lists,
segmentation.main's command line on them, running a program's main in-process, reading log.txt and
TensorBoard's event files."""
from __future__ import annotations

from pathlib import Path

from data.synthetic import make_cifar10, make_voc
from segmentation.generate_splits import id_list_text
from utils.errors import run_cli
from utils.run_log import parse_log_line


def voc_with_split(root: Path, *, labelled: int = 4, sets_id: int = 0, **make_voc_args) -> Path:
    """``make_voc(root, **make_voc_args)`` plus the split ``20_labeled_<sets_id>.txt`` (the first
    ``labelled`` trainaug ids) and ``20_unlabeled_<sets_id>.txt`` (the others); returns the VOC2012 folder."""
    voc = make_voc(root, **make_voc_args)
    lists = voc / "ImageSets" / "Segmentation"
    ids = (lists / "trainaug.txt").read_text().split()
    (lists / f"20_labeled_{sets_id}.txt").write_text(id_list_text(ids[:labelled]))
    (lists / f"20_unlabeled_{sets_id}.txt").write_text(id_list_text(ids[labelled:]))
    return voc


def cifar_with_splits(root: Path, sizes: tuple[int, ...] = (1,), seeds: tuple[int, ...] = (1,), *,
                      per_class: int = 8, test_per_class: int = 2, val_size: int = 3) -> Path:
    """Synthetic CIFAR-10 batches under ``root`` and their splits from classification.generate_splits
    (``sizes`` labelled images per class, one split per seed); returns ``root`` (the --data-root)."""
    from classification import generate_splits
    make_cifar10(root, num_train_per_class=per_class, num_test_per_class=test_per_class)
    generate_splits.main(["--root", str(root), "--sizes", *map(str, sizes), "--seeds", *map(str, seeds),
                          "--val-size", str(val_size)])
    return root


def seg_main_argv(voc: Path, out: Path, *extra: str, backbone: str = "tiny", crop: int = 33,
                  test_size: int = 41) -> list[str]:
    """segmentation.main on the CPU without worker processes, untrained backbone, split 20 / sets id 0."""
    return ["--data-root", str(voc), "--out-dir", str(out), "--backbone", backbone, "--pretrained", "none",
            "--crop-size", str(crop), str(crop), "--test-size", str(test_size), str(test_size),
            "--device", "cpu", "--workers", "0", "--train-set", "20", "--sets-id", "0", *extra]


def run_program(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """``run_cli(main, argv)`` (exit status as the command line would have it) and what it printed."""
    rc = run_cli(main, argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def log_lines(out: Path) -> dict[str, tuple[float, dict[str, str]]]:
    """``out/log.txt`` (none: empty) as {run name: (best value, fields)}."""
    lines = (out / "log.txt").read_text().splitlines() if (out / "log.txt").is_file() else []
    return {name: (best, fields) for name, best, fields in map(parse_log_line, lines)}


def tb_tags(folder: Path) -> set[str]:
    """The scalar tags TensorBoard's own reader finds in the event files under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return set(acc.Tags()["scalars"])
