"""The batched device train transform (classification/batch_augment.py, batch_ops.py)
against the PIL path, op by op.

Each op of the 16 runs through the PIL implementation (classification.augment, i.e. the original's
PIL calls) and through the batched one on the same uint8 images with the same magnitude (and sign /
Cutout centre); ``MAX_MISMATCH`` states the bound per op: every op is exact (0 differing pixels),
because the batched code replays Pillow's integer and float32 formulas and reads the geometric
index maps off the PIL ops. Then crop/flip, the whole transform with n = 2, the draws' distribution
on 10⁵ seeds (chi-square), the streams and flags, and a resumed end-to-end DMT run on the batched path.
"""
from __future__ import annotations

import argparse
import itertools
import random

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision.transforms.v2 import functional as F

from classification import augment, batch_augment as ba, batch_ops as draws, options
from classification.augment import GEOMETRIC_OPS, RANDAUGMENT_OPS, op_magnitude
from classification.cifar import CifarDataset
from utils.errors import UserError
from utils.trainer import EpochStream, SeededDataset, _mix

NAMES = [name for name, _, _ in RANDAUGMENT_OPS]
# Pixels (out of images × 3 × 1024) allowed to differ from the PIL op, per op: none.
MAX_MISMATCH = {name: 0 for name in NAMES}
AUGMENTER = ba.BatchRandAugment("cpu", n=1, m_max=10)


def make_images() -> np.ndarray:
    """(24, 32, 32, 3) uint8: uniform noise, low-contrast noise, smooth gradients, a constant image,
    a two-level image, one channel constant (AutoContrast/Equalize identity cases)."""
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (8, 32, 32, 3))
    low = rng.integers(0, 40, (8, 32, 32, 3)) + rng.integers(0, 200, (8, 1, 1, 3))
    y, x = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    smooth = np.stack([np.stack([(3 * y + k * x) % 256, (x * y // 4 + k) % 256, (5 * x + 2 * y + 40 * k) % 256], -1)
                       for k in range(4)])
    constant = np.full((1, 32, 32, 3), 77)
    two = np.where((x + y) % 3 == 0, 200, 20)[None, ..., None].repeat(3, -1)
    one_flat = rng.integers(0, 256, (2, 32, 32, 3))
    one_flat[..., 1] = 9
    return np.concatenate([noise, low, smooth, constant, two, one_flat]).astype(np.uint8)


IMAGES = make_images()
CHW = torch.from_numpy(IMAGES.transpose(0, 3, 1, 2).copy())


def pil_op(name: str, image: np.ndarray, m: int, sign: int, centre: tuple[float, float]) -> np.ndarray:
    """The PIL path's op with the given magnitude, sign and CutoutAbs centre."""
    v = op_magnitude(name, m)
    if name in GEOMETRIC_OPS:
        return np.asarray(augment.geometric_op(name, Image.fromarray(image), sign * v))
    if name == "CutoutAbs":
        x0, y0, x1, y1 = augment.cutout_box(32, 32, v, *centre)
        out = image.copy()
        out[y0:y1 + 1, x0:x1 + 1] = augment.CUTOUT_ABS_FILL
        return out
    return np.asarray(augment.randaugment_op(name, Image.fromarray(image), v))


def batched_op(name: str, m: int, sign: int, centres: np.ndarray) -> np.ndarray:
    """The batched stage with every image given op ``name``: (B, 32, 32, 3)."""
    b = len(IMAGES)
    g = draws.GROUP_ORDER.index(name)
    starts = [0] * (g + 1) + [b] * (len(draws.GROUP_ORDER) - g)
    out = AUGMENTER.stage(CHW, torch.full((b,), NAMES.index(name)), torch.full((b,), m), torch.full((b,), sign),
                          torch.from_numpy(centres), starts)
    return out.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("name", NAMES)
def test_each_op_equals_the_pil_op(name):
    rng = np.random.default_rng(NAMES.index(name))
    for m in range(1, 11):
        for sign in ((1, -1) if name in GEOMETRIC_OPS else (1,)):
            centres = rng.uniform(0, 32, (len(IMAGES), 2))
            expected = np.stack([pil_op(name, img, m, sign, tuple(c)) for img, c in zip(IMAGES, centres)])
            got = batched_op(name, m, sign, centres)
            assert got.dtype == np.uint8 and got.shape == expected.shape
            mismatched = int((got != expected).sum())
            assert mismatched <= MAX_MISMATCH[name], (name, m, sign, mismatched)


def test_ops_change_the_images():
    """The comparison above is not vacuous: every op changes some test image at m = 10 (Sharpness and
    Contrast at 1.9, Posterize to 4 bits, Solarize at 256 is the identity, so m = 5 there)."""
    for name in NAMES:
        m = 5 if name == "Solarize" else 10
        assert (batched_op(name, m, 1, np.full((len(IMAGES), 2), 16.0)) != IMAGES).any(), name


def test_crop_and_flip_equal_torchvision_on_pil():
    """RandomCrop(32, padding 4, fill 128) at every offset, then the flip, against F.pad / F.crop / F.hflip."""
    image = IMAGES[0]
    offsets = [(y, x) for y in range(9) for x in range(9)]
    for flip in (0, 1):
        b = len(offsets)
        got = AUGMENTER.crop_flip(CHW[:1].expand(b, -1, -1, -1), torch.tensor([o[0] for o in offsets]),
                                  torch.tensor([o[1] for o in offsets]), torch.full((b,), flip))
        for (y, x), out in zip(offsets, got):
            ref = F.crop(F.pad(Image.fromarray(image), [4], fill=128), y, x, 32, 32)
            ref = F.hflip(ref) if flip else ref
            assert np.array_equal(out.numpy().transpose(1, 2, 0), np.asarray(ref)), (y, x, flip)


def pil_transform(image: np.ndarray, p: draws.AugmentParams, b: int) -> torch.Tensor:
    """The PIL path with image b's drawn choices: crop → flip → n ops → ToTensor → Normalize."""
    out = F.crop(F.pad(Image.fromarray(image), [4], fill=128), int(p.crop_y[b]), int(p.crop_x[b]), 32, 32)
    out = np.asarray(F.hflip(out) if p.flip[b] else out)
    for k in range(p.ops.shape[1]):
        out = pil_op(NAMES[p.ops[b, k]], out, int(p.m[b]), int(p.signs[b, k]), tuple(p.centres[b, k]))
    return augment.eval_transform()(Image.fromarray(out))


def test_whole_transform_equals_the_pil_path_bit_for_bit():
    """n = 2 stages (two different sorts) over 200 seeded images through the loader path (seeded
    items, RawCollate): the normalised float32 output equals the PIL path's ToTensor → Normalize of
    the same choices exactly."""
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8)
    dataset = ba.RawRowsDataset(rows, np.arange(50) % 10)
    seeded = SeededDataset(dataset)
    items = [seeded[(i % 50, _mix(5, i))] for i in range(200)]
    raw, labels = ba.RawCollate(2, 10, dataset.empty_targets())(items)
    augmenter = ba.BatchRandAugment("cpu", n=2, m_max=10)
    got = augmenter(raw)
    params = draws.draw_params(np.array([item[1] for item in items], dtype=np.uint64), 2, 10)
    assert set(params.ops.ravel()) == set(range(16))  # every op occurs
    expected = torch.stack([pil_transform(rows[i % 50].transpose(1, 2, 0), params, i) for i in range(200)])
    assert got.dtype == torch.float32 and got.shape == (200, 3, 32, 32)
    assert torch.equal(got, expected)
    assert torch.equal(labels, torch.tensor([i % 50 % 10 for i in range(200)]))
    # the key is the seeded random's first 63 bits: a function of the sample seed only, and the
    # DataLoader's batched fetch (no re-seeding) gives the per-item fetch's items
    random.seed(_mix(5, 7))
    assert items[7][1] == random.getrandbits(63)
    batched = seeded.__getitems__([(i % 50, _mix(5, i)) for i in range(200)])
    assert [b[1] for b in batched] == [item[1] for item in items]
    assert all(np.array_equal(b[0], item[0]) and int(b[2]) == int(item[2]) for b, item in zip(batched, items))


def chi2_p(observed: np.ndarray) -> float:
    """p-value of a chi-square goodness-of-fit test of counts against a uniform distribution."""
    return float(stats.chisquare(observed).pvalue)


def test_draws_have_the_originals_distribution_on_100k_seeds():
    """Ops uniform over 16 with replacement (independent of each other and of m), m ~ U{1..10}, crop
    offsets U{0..8}, flip and sign fair, Cutout centre uniform: chi-square p > 1e-3 on 10⁵ draws."""
    seeds = np.array([_mix(1, e, i, 1) for e in range(2) for i in range(50_000)], dtype=np.uint64)
    p = draws.draw_params(seeds, n=2, m_max=10)
    assert p.ops.min() == 0 and p.ops.max() == 15 and p.m.min() == 1 and p.m.max() == 10
    for name, values, cells in (("op 1", p.ops[:, 0], 16), ("op 2", p.ops[:, 1], 16), ("m", p.m - 1, 10),
                                ("crop y", p.crop_y, 9), ("crop x", p.crop_x, 9), ("flip", p.flip.astype(int), 2),
                                ("sign", (p.signs[:, 0] < 0).astype(int), 2),
                                ("op × op", p.ops[:, 0] * 16 + p.ops[:, 1], 256),
                                ("op × m", p.ops[:, 0] * 10 + p.m - 1, 160),
                                ("centre x", np.floor(p.centres[:, 0, 0]).astype(int), 32),
                                ("centre y", np.floor(p.centres[:, 0, 1]).astype(int), 32)):
        counts = np.bincount(values, minlength=cells)
        assert len(counts) == cells, name
        assert chi2_p(counts) > 1e-3, (name, counts)
    # the chi-square test is able to fail: a 2 % bias on one op out of 16 is detected
    biased = np.bincount(p.ops[:, 0], minlength=16).astype(float)
    biased[0] += 0.02 * len(seeds)
    assert chi2_p(biased) < 1e-3


def test_draws_depend_on_the_sample_seed_only():
    seeds = np.array([_mix(9, i) for i in range(64)], dtype=np.uint64)
    whole = draws.draw_params(seeds, 1, 10)
    part = draws.draw_params(seeds[::-1][:10].copy(), 1, 10)
    for field in ("crop_y", "crop_x", "flip", "m", "ops", "signs", "centres"):
        assert np.array_equal(getattr(whole, field)[::-1][:10], getattr(part, field)), field
    other = draws.draw_params(seeds + np.uint64(1), 1, 10)
    assert not np.array_equal(whole.ops, other.ops)


def test_raw_stream_follows_the_pil_streams_order_and_resumes():
    """An EpochStream with RawCollate visits the samples in the PIL path's batches, from any start
    position, with the same choices whatever the worker count; an empty share gives an empty batch."""
    rows = np.random.default_rng(1).integers(0, 256, (23, 3, 32, 32), dtype=np.uint8)
    dataset, collate = ba.for_loader(CifarDataset(rows.transpose(0, 2, 3, 1), None), AUGMENTER)
    raw = EpochStream(dataset, batch_size=5, seed=4, collate_fn=collate)
    raw2 = EpochStream(dataset, batch_size=5, seed=4, collate_fn=collate, num_workers=2)

    class Indices(torch.utils.data.Dataset):
        def __len__(self):
            return 23

        def __getitem__(self, i):
            return i

    pil = EpochStream(Indices(), batch_size=5, seed=4)
    assert len(raw) == len(pil) == 5
    from_start = list(itertools.islice(raw.iterate(0), 10))
    for (batch, indices), (batch2, indices2), expected in zip(itertools.islice(raw.iterate(3), 7),
                                                              itertools.islice(raw2.iterate(3), 7), pil.iterate(3)):
        assert isinstance(batch, draws.RawBatch) and len(batch) == len(indices)
        assert torch.equal(indices, expected) and torch.equal(indices2, expected)
        assert torch.equal(batch.ints, batch2.ints) and torch.equal(batch.centres, batch2.centres)
    resumed = next(raw.iterate(3))[0]
    assert torch.equal(resumed.ints, from_start[3][0].ints) and torch.equal(resumed.images, from_start[3][0].images)
    assert not torch.equal(from_start[0][0].ints, from_start[5][0].ints)  # the next epoch draws anew
    empty, targets = collate([])
    assert len(empty) == 0 and targets.shape == (0,) and AUGMENTER(empty).shape == (0, 3, 32, 32)


def test_device_batches_keep_the_nesting():
    """on_device replaces each RawBatch by its augmented images and uploads the rest, keeping the
    DMT pair structure ((pseudo images, probs), (labelled images, labels))."""
    rows = np.random.default_rng(2).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    probs = torch.softmax(torch.randn(6, 10), dim=1)
    pseudo, collate_p = ba.for_loader(CifarDataset(rows.transpose(0, 2, 3, 1), probs.numpy()), AUGMENTER)
    labelled, collate_l = ba.for_loader(CifarDataset(rows.transpose(0, 2, 3, 1), np.arange(6)), AUGMENTER)
    seeded_p, seeded_l = SeededDataset(pseudo), SeededDataset(labelled)
    pair = (collate_p([seeded_p[(i, i)] for i in range(4)]), collate_l([seeded_l[(i, 9 + i)] for i in range(2)]))
    ((p_images, p_probs), (l_images, l_labels)), = list(ba.on_device(lambda start: iter([pair]), AUGMENTER)(0))
    assert p_images.shape == (4, 3, 32, 32) and l_images.shape == (2, 3, 32, 32)
    assert torch.equal(p_images, AUGMENTER(pair[0][0])) and torch.equal(p_probs, probs[:4])
    assert torch.equal(l_labels, torch.tensor([0, 1]))
    assert ba.on_device(len, None) is len  # the PIL path: untouched


def test_group_sort_covers_the_batch():
    params = draws.draw_params(np.arange(300, dtype=np.uint64), 3, 10)
    batch = draws.RawBatch.build(np.zeros((300, 3, 32, 32), np.uint8), params)
    for k in range(3):
        order = batch.orders[k].numpy()
        assert sorted(order) == list(range(300))
        starts = batch.starts[k]
        assert starts[0] == 0 and starts[-1] == 300 and len(starts) == 17
        for g, name in enumerate(draws.GROUP_ORDER):
            assert (params.ops[order[starts[g]:starts[g + 1]], k] == NAMES.index(name)).all()


def namespace(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"cpu_augment": False, "device_augment": False, **kw})


def test_which_path_trains():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not ba.resolve(namespace(), cpu, randaugment=True)            # PIL stays the CPU default
    assert ba.resolve(namespace(), cuda, randaugment=True)               # batched is the CUDA default
    assert not ba.resolve(namespace(), cuda, randaugment=False)          # AutoAugment has no batched version
    assert not ba.resolve(namespace(cpu_augment=True), cuda, randaugment=True)
    assert ba.resolve(namespace(device_augment=True), cpu, randaugment=True)
    with pytest.raises(UserError, match="--device-augment"):
        ba.resolve(namespace(device_augment=True), cpu, randaugment=False)
    assert options.parse_dmt(["--device-augment"]).device_augment
    assert options.parse_fs(["--cpu-augment"]).cpu_augment
    with pytest.raises(SystemExit):
        options.parse_dmt(["--device-augment", "--cpu-augment"])


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def dmt_data(tmp_path_factory):
    """A tiny synthetic CIFAR-10 with a pseudo file (written directly: random rows' own soft labels)."""
    from classification import generate_splits
    from classification.cifar import cifar_folder, read_labelled, write_pseudo
    from data.synthetic import make_cifar10
    root = tmp_path_factory.mktemp("cifar")
    make_cifar10(root, num_train_per_class=8, num_test_per_class=2)
    generate_splits.main(["--root", str(root), "--sizes", "2", "--seeds", "1", "--val-size", "3"])
    rows = read_labelled(cifar_folder(root) / "2_seed1_unlabeled").data
    probs = np.random.default_rng(0).dirichlet(np.ones(10), len(rows)).astype(np.float32)
    pseudo = root / "pseudo"
    pseudo.mkdir()
    write_pseudo(pseudo / "2_seed1_pseudo", rows, probs)
    return root, pseudo


def test_dmt_run_on_the_batched_path_is_resumable(dmt_data, tmp_path, monkeypatch):
    """main_dmt --device-augment on CPU: the batched transform feeds training (its augmenter is called),
    and a run interrupted after iteration 3 resumes to the same weights as an uninterrupted one."""
    from classification import main_dmt
    from utils import trainer
    from utils.errors import run_cli
    monkeypatch.setenv("DMT_NO_PROGRESS", "1")
    root, pseudo = dmt_data
    calls = []
    original = ba.BatchRandAugment.__call__
    monkeypatch.setattr(ba.BatchRandAugment, "__call__", lambda self, raw: calls.append(len(raw)) or original(self, raw))

    def argv(name):
        return ["--data-root", str(root), "--out-dir", str(tmp_path), "--device", "cpu", "--workers", "0",
                "--exp-name", name, "--train-set", "2_seed1", "--pseudo-dir", str(pseudo), "--device-augment",
                "--batch-size-labeled", "4", "--batch-size-pseudo", "10", "--epochs", "2", "--gamma1", "4",
                "--gamma2", "4", "--val-num-steps", "100", "--resume-every", "1", "--deterministic"]

    assert run_cli(main_dmt.main, argv("straight")) == 0
    assert calls[:2] == [10, 4] and len(calls) == 12  # 6 iterations × (pseudo + labelled batch)

    class DyingCostMeter(trainer.CostMeter):  # interrupted during iteration 4, before its resume checkpoint
        def add(self, images):
            super().add(images)
            if self.images > 3 * 14:
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "CostMeter", DyingCostMeter)
    assert run_cli(main_dmt.main, argv("resumed")) == 130
    monkeypatch.setattr(trainer, "CostMeter", DyingCostMeter.__mro__[1])
    assert run_cli(main_dmt.main, argv("resumed")) == 0
    for suffix in (".pt", "--ema.pt"):
        a = torch.load(tmp_path / f"straight{suffix}", weights_only=False)["model"]
        b = torch.load(tmp_path / f"resumed{suffix}", weights_only=False)["model"]
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    import json
    assert json.loads((tmp_path / "straight_cfg.json").read_text())["device_augment"] is True


def test_weights_forward_is_compiled_with_the_model(monkeypatch):
    """Under --compile the DMT weights forward goes through torch.compile of the plain module (not the
    eager module behind the compiled wrapper)."""
    from classification import training
    from classification.models import wrn_28_2
    from utils.amp import Precision
    from utils.cli import Runtime
    from utils.distributed import DistInfo
    compiled, used = [], []

    class Recorder(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            used.append(x.shape[0])
            return self.module(x)

    monkeypatch.setattr(training.torch, "compile", lambda module: compiled.append(module) or Recorder(module))
    torch.manual_seed(0)
    model = wrn_28_2()
    rt = Runtime(torch.device("cpu"), DistInfo(0, 1, 0), Precision("fp32", torch.device("cpu")),
                 torch.contiguous_format)
    args = options.parse_dmt(["--compile", "--gamma1", "4", "--gamma2", "4"])
    step = training.dmt_step(model, args, rt, total_steps=10)
    assert compiled == [model]
    probs = torch.softmax(torch.randn(3, 10), dim=1)
    batch = ((torch.randn(3, 3, 32, 32), probs), (torch.randn(2, 3, 32, 32), torch.tensor([1, 2])))
    loss, _, images = step(batch, 1)
    assert used == [5] and images == 5 and torch.isfinite(loss)


@pytest.mark.parametrize("mode", ["fp32", "fp16"])
def test_dmt_step_has_no_host_sync(mode):
    """The DMT hot path (step, fp16 GradScaler step with the fused SGD used on CUDA, EMA, LR schedule)
    never reads a tensor back on the host (no .item()/bool()/float() of a tensor): counted per aten call."""
    import collections

    from torch.utils._python_dispatch import TorchDispatchMode

    from classification import training
    from classification.training import ModelEMA
    from utils.amp import Precision
    from utils.cli import Runtime
    from utils.distributed import DistInfo
    from utils.schedules import cosine_scheduler
    from utils.trainer import backward_step

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls[str(func)] += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))  # small: fp16 is slow on CPU
    cpu = torch.device("cpu")
    rt = Runtime(cpu, DistInfo(), Precision(mode, cpu), torch.contiguous_format)
    step = training.dmt_step(model, options.parse_dmt(["--gamma1", "4", "--gamma2", "4"]), rt, total_steps=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, fused=True)
    scheduler = cosine_scheduler(optimizer, 10)
    ema = ModelEMA(model, 0.001)
    probs = torch.softmax(torch.randn(3, 10), dim=1)
    batch = ((torch.randn(3, 3, 32, 32), probs), (torch.randn(2, 3, 32, 32), torch.tensor([1, 2])))
    with Count() as count:
        for s in (1, 2):
            optimizer.zero_grad(set_to_none=True)
            loss, stats, _ = step(batch, s)
            backward_step(loss, optimizer, rt.precision.scaler)
            scheduler.step()
            ema.update(model)
    assert count.calls["aten.convolution.default"] > 0  # the mode saw the step
    reads = {k: v for k, v in count.calls.items() if "_local_scalar_dense" in k or "is_nonzero" in k}
    assert reads == {}
