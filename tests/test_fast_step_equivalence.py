"""Speed settings do not change what a training step computes (docs/method.md §3.1, §7.1).

The original-style step (:class:`bench.training_steps.ReferenceLoop`: NCHW, fp32 on CPU, statistics
read with ``.item()`` every step) and the project's step (``segmentation.training.dmt_step`` /
``supervised_step`` in ``utils.trainer.Trainer``: channels_last, statistics summed on the device
and logged once per interval, optionally bf16 autocast) start from the same weights and batch.
In NCHW fp32 they are bit-identical (statistics, gradients, weights after the SGD step); with
channels_last they agree to float rounding; under bf16 autocast the loss agrees to bf16 tolerance
and the statistics nearly so.
"""
import argparse
import copy

import pytest
import torch

from bench.training_steps import (ProjectLoop, ReferenceLoop, StepConfig, loss_for, project_runtime,
                                  synthetic_batch)
from segmentation.models import deeplab_v2
from utils.amp import Precision
from utils.cli import add_runtime_args, memory_format_for

CPU = torch.device("cpu")
CROP = (33, 33)
CLASSES = 21
# γ = 1 rather than the scripts' 5: with random weights p_y ≈ 1/21, and p_y^5 ≈ 0 would make every
# pseudo weight vanish and avg_weights blind to the pseudo part.
DMT = StepConfig(CLASSES, CROP, labelled=1, pseudo=2, gamma=(1.0, 1.0), log_every=1)
SUPERVISED = StepConfig(CLASSES, CROP, labelled=2, log_every=1)


def model(backbone: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return deeplab_v2(CLASSES, backbone, pretrained=None)


def reference_step(net, cfg, batch):
    loop = ReferenceLoop(net, cfg, CPU)
    assert loop.precision.mode == "fp32"  # fp16 autocast does not exist on CPU
    loop.step(batch)
    return loop


def fast_loop(net, cfg, precision: str) -> ProjectLoop:
    net = net.to(memory_format=torch.channels_last)
    return ProjectLoop(net, cfg, project_runtime(CPU, Precision(precision, CPU), torch.channels_last))


def pseudo_pixels(cfg, batch) -> int:
    (_, labels, _), _ = batch
    return int((labels != 255).sum())


def gradients(net) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v3_large"])
def test_project_loop_equals_reference_bitwise_in_nchw_fp32(backbone):
    """Same layout and precision: device-side statistics, the Trainer loop and the reference's
    per-step ``.item()`` reads give identical numbers, gradients and updated weights."""
    base, batch = model(backbone), synthetic_batch(DMT, seed=3)
    ref = reference_step(copy.deepcopy(base), DMT, batch)
    net = copy.deepcopy(base)
    fast = ProjectLoop(net, DMT, project_runtime(CPU, Precision("fp32", CPU), torch.contiguous_format))
    fast.run(batch, 1)
    logged = fast.last_logged()
    assert set(logged) == {"loss", "disagree", "current_win", "avg_weights", "weight_agree", "weight_disagree",
                           "weight_zero_frac"} == set(ref.last_stats)
    for key, value in ref.last_stats.items():
        assert logged[key] == pytest.approx(value, rel=1e-6, abs=0), key
    # the statistics describe the batch: at most every non-ignored pseudo pixel disagrees
    assert 0 < ref.last_stats["current_win"] <= ref.last_stats["disagree"] <= pseudo_pixels(DMT, batch)
    ref_grads, ref_params = gradients(ref.model), dict(ref.model.named_parameters())
    assert set(gradients(net)) == set(ref_grads)
    changed = 0
    for name, p in net.named_parameters():
        if p.grad is not None:
            assert torch.equal(p.grad, ref_grads[name]), name
        assert torch.equal(p, ref_params[name]), name
        changed += int(not torch.equal(p, base.get_parameter(name)))
    assert changed > 0  # the SGD step did update the weights


def float64_gradients(base, cfg, batch) -> dict[str, torch.Tensor]:
    """The step's gradients computed in float64 (NCHW): the ground truth both fp32 layouts round."""
    (p_images, p_labels, p_confidences), (l_images, l_labels) = batch
    net = copy.deepcopy(base).double().train()
    confidences = torch.cat([p_confidences, torch.ones(l_labels.shape)]).double()
    loss, _ = loss_for(cfg)(net(torch.cat([p_images, l_images]).double()), torch.cat([p_labels, l_labels]),
                            confidences, cfg.pseudo)
    loss.backward()
    return gradients(net)


def relative_error(grads: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> float:
    names = sorted(truth)
    a = torch.cat([grads[n].double().reshape(-1) for n in names])
    b = torch.cat([truth[n].reshape(-1) for n in names])
    return float((a - b).norm() / b.norm())


def test_channels_last_matches_reference_fp32():
    """channels_last reorders the convolutions' sums: loss and statistics agree to float rounding,
    and its gradients are as close to the float64 gradients as the NCHW reference's are (a random
    ResNet at batch 3 amplifies fp32 rounding to about 2 % through BatchNorm, in either layout)."""
    base, batch = model("resnet50"), synthetic_batch(DMT, seed=3)
    ref = reference_step(copy.deepcopy(base), DMT, batch)
    net = copy.deepcopy(base)
    fast = fast_loop(net, DMT, "fp32")
    fast.run(batch, 1)
    logged = fast.last_logged()
    assert logged["loss"] == pytest.approx(ref.last_stats["loss"], rel=1e-5)
    assert logged["disagree"] == ref.last_stats["disagree"]
    assert logged["current_win"] == ref.last_stats["current_win"]
    assert logged["avg_weights"] == pytest.approx(ref.last_stats["avg_weights"], rel=1e-5)
    truth = float64_gradients(base, DMT, batch)
    reference_error = relative_error(gradients(ref.model), truth)
    assert reference_error < 0.05
    assert relative_error(gradients(net), truth) < 1.25 * reference_error


def test_supervised_step_matches_reference_fp32():
    base, batch = model("mobilenet_v3_large"), synthetic_batch(SUPERVISED, seed=4)
    ref = reference_step(copy.deepcopy(base), SUPERVISED, batch)
    fast = fast_loop(copy.deepcopy(base), SUPERVISED, "fp32")
    step_loss, stats, images = fast.step_fn(batch, 1)
    assert images == 2 and set(stats) == {"loss"}
    assert float(step_loss.detach()) == pytest.approx(float(ref.last_loss), rel=1e-5)
    assert float(stats["loss"]) == pytest.approx(ref.last_stats["loss"], rel=1e-5)


def test_bf16_fast_step_matches_fp32_reference_to_bf16_tolerance():
    base, batch = model("resnet50"), synthetic_batch(DMT, seed=5)
    ref = reference_step(copy.deepcopy(base), DMT, batch)
    fast = fast_loop(copy.deepcopy(base), DMT, "bf16")
    loss, stats, _ = fast.step_fn(batch, 1)
    # device-side statistics: 0-d tensors (the weight histogram a 1-D one), nothing read back by the step itself
    assert all(isinstance(v, torch.Tensor) and v.dim() == (1 if k == "weights_hist" else 0) for k, v in stats.items())
    assert float(loss.detach()) == pytest.approx(float(ref.last_loss), rel=1e-2)
    assert float(stats["loss"]) == pytest.approx(ref.last_stats["loss"], rel=1e-2)
    assert float(stats["avg_weights"]) == pytest.approx(ref.last_stats["avg_weights"], abs=1e-2)
    # bf16 logits may flip the argmax of near-ties: allow 1 % of the pseudo pixels
    tolerance = 0.01 * pseudo_pixels(DMT, batch)
    assert abs(float(stats["disagree"]) - ref.last_stats["disagree"]) <= tolerance
    assert abs(float(stats["current_win"]) - ref.last_stats["current_win"]) <= tolerance


def test_channels_last_default_is_on_for_cuda_only():
    """``--channels-last`` / ``--no-channels-last``; neither: on with CUDA, off on CPU."""
    parser = argparse.ArgumentParser()
    add_runtime_args(parser)
    flags = {argv: parser.parse_args(list(argv)).channels_last
             for argv in ((), ("--channels-last",), ("--no-channels-last",))}
    assert flags == {(): None, ("--channels-last",): True, ("--no-channels-last",): False}
    cuda = torch.device("cuda")
    assert memory_format_for(cuda, None) == torch.channels_last
    assert memory_format_for(CPU, None) == torch.contiguous_format
    assert memory_format_for(cuda, False) == torch.contiguous_format
    assert memory_format_for(CPU, True) == torch.channels_last
