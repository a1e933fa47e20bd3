"""What a run shows besides its scalars: the dynamic weights' histogram and diagnostics during DMT
training, validation pictures (image | ground truth | prediction in the dataset's palette), and the
confusion matrix of a classification test — read back with TensorBoard's own event reader."""
from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from classification import main_fs
from classification.options import parse_fs
from classification.evaluation import evaluate as cls_evaluate, evaluation_loader
from classification.run_config import RunConfig
from data.synthetic.cityscapes import CITY_LABELS, CITY_TRAIN_LABEL_IDS
from segmentation.palette import VOC_PALETTE, voc_palette
from segmentation.palette import palette
from tests.test_cls_programs import cifar, labeller as cls_labeller, reference_softmax, split_file  # noqa: F401
from tests.test_seg_main import CROP, TEST_SIZE, common, labeller, run, voc  # noqa: F401
from segmentation.main import main as seg_main
from utils.amp import Precision
from utils.cli import Runtime
from utils.distributed import DistInfo
from utils.errors import run_cli
from utils.losses import dmt_loss, weight_stats
from utils.metrics import ConfusionMatrix
from utils.run_log import RunLogger
from utils.schedules import poly_scheduler
from utils.trainer import Trainer


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")


def accumulator(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    acc.Reload()
    return acc


# ----------------------------------------------------------------------------- weight statistics
def test_weight_stats_by_hand():
    weights = torch.tensor([0.0, 0.5, 1.0, 0.26, 0.9, 0.3])
    agree = torch.tensor([True, False, True, False, True, False])
    pseudo = torch.tensor([True, True, True, True, False, True])  # the 0.9 is not a pseudo pixel
    stats = weight_stats(weights, agree, pseudo, bins=4)
    # bins [0, .25) [.25, .5) [.5, .75) [.75, 1]: 0 -> 0; 0.26, 0.3 -> 1; 0.5 -> 2; 1.0 -> 3
    assert stats["weights_hist"].tolist() == [1, 2, 1, 1]
    assert float(stats["weight_agree"]) == pytest.approx((0.0 + 1.0) / 2)
    assert float(stats["weight_disagree"]) == pytest.approx((0.5 + 0.26 + 0.3) / 3)
    assert float(stats["weight_zero_frac"]) == pytest.approx(1 / 5)
    empty = weight_stats(weights, agree, torch.zeros(6, dtype=torch.bool), bins=4)
    assert empty["weights_hist"].sum() == 0 and float(empty["weight_zero_frac"]) == 0


def test_loss_histogram_counts_the_pseudo_pixels_only():
    """2 pseudo images + 1 labelled, 2×2 pixels, 3 classes; weights by docs/method.md §3.1 worked out by hand."""
    probs = torch.tensor([[0.62, 0.27, 0.11], [0.22, 0.71, 0.07], [0.12, 0.06, 0.82], [0.52, 0.41, 0.07]])
    logits = probs.log()  # softmax(log p) = p
    logits = torch.stack([logits, logits, logits]).permute(0, 2, 1).reshape(3, 3, 2, 2)
    labels = torch.tensor([[0, 0, 2, 255], [1, 1, 0, 0], [0, 1, 2, 0]]).reshape(3, 2, 2)
    conf = torch.tensor([[0.9, 0.9, 0.9, 0.9], [0.9, 0.9, 0.5, 0.9], [1, 1, 1, 1]]).reshape(3, 2, 2)
    _, stats = dmt_loss(logits, labels, conf, 2, 1.0, 1.0)
    # image 0: agree .62 | d=1≠0, q=.71 ≤ .9 -> p_y=.22 | agree .82 | ignored
    # image 1: d=0≠1, q=.62 ≤ .9 -> .27 | agree .71 | d=2≠0, q=.82 > c=.5 -> 0 | agree .52
    # the labelled image 2 (weights 1) is not counted
    weights = [0.62, 0.22, 0.82, 0.27, 0.71, 0.0, 0.52]
    expected = np.histogram(weights, bins=20, range=(0, 1))[0]
    assert stats["weights_hist"].tolist() == expected.tolist() and stats["weights_hist"].sum() == 7
    assert float(stats["weight_agree"]) == pytest.approx((0.62 + 0.82 + 0.71 + 0.52) / 4)
    assert float(stats["weight_disagree"]) == pytest.approx((0.22 + 0.27 + 0.0) / 3)
    assert float(stats["weight_zero_frac"]) == pytest.approx(1 / 7)


def test_trainer_sums_histograms_over_an_interval():
    class Capture(RunLogger):
        def __init__(self):
            super().__init__("unused", "t", enabled=False)
            self.hists, self.scalar_tags = [], set()

        def scalar(self, tag, value, step):
            self.scalar_tags.add(tag)

        def histogram(self, tag, counts, step, low=0.0, high=1.0):
            self.hists.append((tag, step, counts.tolist()))

    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logger = Capture()
    trainer = Trainer(model=model, optimizer=opt, scheduler=poly_scheduler(opt, 4), precision=Precision("fp32", torch.device("cpu")),
                      total_steps=4, val_every=100, logger=logger, device=torch.device("cpu"), snapshot_path=None,
                      resume_path=None, log_every=2, desc="t")

    def step(batch, s):
        return model(batch).pow(2).mean(), {"h_hist": torch.tensor([1.0, float(s)]), "x": torch.tensor(1.0)}, 4

    trainer.fit(lambda start: itertools.repeat(torch.ones(4, 2)), step, lambda: {"metric": 0.0})
    # steps 1+2 and 3+4: [2, 3] and [2, 7]
    assert logger.hists == [("train/h_hist", 2, [2.0, 3.0]), ("train/h_hist", 4, [2.0, 7.0])]
    assert "train/x" in logger.scalar_tags and "train/h_hist" not in logger.scalar_tags


def test_run_logger_histogram_reads_back(tmp_path):
    logger = RunLogger(tmp_path, "h")
    logger.histogram("train/w", torch.tensor([1.0, 0.0, 3.0, 0.0]), 7)
    logger.histogram("train/empty", torch.zeros(4), 7)  # nothing to show: not written
    logger.close()
    acc = accumulator(tmp_path / "h")
    assert acc.Tags()["histograms"] == ["train/w"]
    (event,) = acc.Histograms("train/w")
    value = event.histogram_value
    assert event.step == 7 and list(value.bucket) == [1, 0, 3, 0]
    assert list(value.bucket_limit) == [0.25, 0.5, 0.75, 1.0]
    assert (value.min, value.max, value.num) == (0.0, 0.75, 4)
    assert value.sum == pytest.approx(1 * 0.125 + 3 * 0.625)


# ----------------------------------------------------------------------------- palettes
def test_palettes():
    voc = palette("voc")
    assert voc[0].tolist() == [0, 0, 0] and voc[1].tolist() == [128, 0, 0] and voc[15].tolist() == [192, 128, 128]
    assert voc[255].tolist() == [224, 224, 192] and (voc == voc_palette()).all() and (voc == VOC_PALETTE).all()
    city = palette("city")
    assert city[0].tolist() == [128, 64, 128] and city[13].tolist() == [0, 0, 142]  # road, car
    assert city[18].tolist() == list(CITY_LABELS[CITY_TRAIN_LABEL_IDS[18]][1]) == [119, 11, 32]  # bicycle
    assert city[255].tolist() == [224, 224, 192] and city[19:255].max() == 0


# ----------------------------------------------------------------------------- a tiny DMT run
def decode(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def test_dmt_run_logs_weight_histograms_and_validation_pictures(voc, labeller, tmp_path, capsys):
    pseudo = tmp_path / "pseudo"
    rc, _, err = run(common(voc, tmp_path, "--state", "1", "--labeling", "--exp-name", "lab", "--continue-from",
                            str(labeller), "--pseudo-dir", str(pseudo), "--label-ratio", "0.5"), capsys)
    assert rc == 0, err
    rc, _, err = run(common(voc, tmp_path, "--state", "1", "--exp-name", "dmt", "--continue-from", str(labeller),
                            "--pseudo-dir", str(pseudo), "--epochs", "1", "--batch-size-labeled", "2",
                            "--batch-size-pseudo", "6", "--gamma1", "1", "--gamma2", "1", "--valtiny",
                            "--val-num-steps", "2", "--lr", "0.001"), capsys)
    assert rc == 0, err
    acc = accumulator(tmp_path / "tb" / "dmt")
    tags = acc.Tags()
    # 12 pseudo images / 6 = 2 iterations, one logging interval each
    assert tags["histograms"] == ["train/weights_hist"]
    hists = acc.Histograms("train/weights_hist")
    assert [h.step for h in hists] == [1, 2]
    for h in hists:
        counts = np.array(h.histogram_value.bucket)
        assert len(counts) == 20 and 0 < counts.sum() <= 6 * CROP * CROP  # the non-ignored pseudo pixels
        assert h.histogram_value.num == counts.sum()
    assert {"train/weight_agree", "train/weight_disagree", "train/weight_zero_frac", "train/disagree",
            "train/current_win", "train/avg_weights"} <= set(tags["scalars"])
    zero = [s.value for s in acc.Scalars("train/weight_zero_frac")]
    assert all(0 <= z <= 1 for z in zero)

    # valtiny = the first 2 val images; validations after step 1 (1 % 2 == 1 = L − 1) and the final one (2)
    assert sorted(t for t in tags["images"]) == ["val/pictures/0", "val/pictures/1"]
    val_ids = (voc / "ImageSets" / "Segmentation" / "valtiny.txt").read_text().split()
    for i, sample_id in enumerate(val_ids):
        events = acc.Images(f"val/pictures/{i}")
        assert [e.step for e in events] == [1, 2]
        strip = decode(events[-1])
        assert strip.shape == (TEST_SIZE, 3 * TEST_SIZE, 3)
        # ground truth third: the label PNG padded bottom/right with 255, in the VOC colours
        gt = np.asarray(Image.open(voc / "SegmentationClassAug" / f"{sample_id}.png"))
        padded = np.full((TEST_SIZE, TEST_SIZE), 255, dtype=np.uint8)
        padded[:gt.shape[0], :gt.shape[1]] = gt
        assert (strip[:, TEST_SIZE:2 * TEST_SIZE] == VOC_PALETTE[padded]).all()
        # image third: the JPEG, black padding (normalise / denormalise rounds within 1)
        rgb = np.asarray(Image.open(voc / "JPEGImages" / f"{sample_id}.jpg").convert("RGB")).astype(int)
        image = strip[:, :TEST_SIZE].astype(int)
        assert np.abs(image[:rgb.shape[0], :rgb.shape[1]] - rgb).max() <= 1
        assert (image[rgb.shape[0]:] == 0).all()
        # prediction third: VOC colours of classes 0..20 only
        colours = {tuple(c) for c in VOC_PALETTE[:21].tolist()}
        assert {tuple(c) for c in strip[:, 2 * TEST_SIZE:].reshape(-1, 3).tolist()} <= colours


# ----------------------------------------------------------------------------- classification
def test_classification_test_writes_its_confusion_matrix(cifar, cls_labeller, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "runs"
    rc = run_cli(main_fs.main, ["--data-root", str(cifar), "--out-dir", str(out), "--device", "cpu", "--workers", "0",
                                "--state", "2", "--exp-name", "x__p0--test", "--continue-from", str(cls_labeller)])
    assert rc == 0, capsys.readouterr().err
    png = out / "x__p0--test_confusion.png"
    assert png.is_file() and Image.open(png).size[0] > 100
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name] == []
    assert accumulator(out / "tb" / "x__p0--test").Tags()["images"] == ["test/confusion"]

    # the counts the figure draws: the evaluation's confusion matrix against numpy
    rows, labels = split_file(cifar, "test")
    predicted = reference_softmax(cls_labeller, rows).argmax(1)
    expected = np.zeros((10, 10), dtype=int)
    np.add.at(expected, (labels, predicted), 1)
    cfg = RunConfig.from_args(parse_fs(["--data-root", str(cifar), "--out-dir", str(out), "--state", "2",
                                        "--continue-from", str(cls_labeller), "--workers", "0"]))
    rt = Runtime(torch.device("cpu"), DistInfo(), Precision("fp32", torch.device("cpu")), torch.contiguous_format)
    from classification.evaluation import load_wrn
    matrix = ConfusionMatrix(10)
    cls_evaluate(load_wrn(cls_labeller, rt), evaluation_loader(cfg, rt), rt, matrix)
    assert matrix.matrix.numpy().tolist() == expected.tolist()
    assert cfg.files.confusion == out / "test_confusion.png"
