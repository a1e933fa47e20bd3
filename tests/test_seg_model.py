"""DeepLab-v2 model: parameter counts, key names, output stride, ASPP-v2 branches, weights loading."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from segmentation.models import (ASPPv2, deeplab_v2, hub_checkpoint_dir, imagenet_weights_file,
                                 logits_to_stride8, parameter_groups)
from utils.errors import UserError


def count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.fixture(scope="module")
def voc_r101():
    torch.manual_seed(0)
    return deeplab_v2(21, "resnet101", pretrained=None)


def test_resnet101_parameter_counts(voc_r101):
    # docs/method.md §4.1: 42,500,160 backbone + 4·(2048·9·C + C) head
    assert count(voc_r101.backbone.parameters()) == 42_500_160
    assert count(voc_r101.parameters()) == 44_048_532 == 42_500_160 + 4 * (2048 * 9 * 21 + 21)
    # the forward pass uses d6 + d12 only: 43,274,346 trainable
    assert count(p for p in voc_r101.parameters() if p.requires_grad) == 43_274_346
    city = deeplab_v2(19, "resnet101", pretrained=None)
    assert count(city.parameters()) == 43_901_068
    assert count(p for p in city.parameters() if p.requires_grad) == 43_200_614


def test_state_dict_keys_match_torchvision_and_original_head(voc_r101):
    tv_keys = {k for k in torchvision.models.resnet101(weights=None).state_dict() if not k.startswith("fc.")}
    keys = set(voc_r101.state_dict())
    assert {k[len("backbone."):] for k in keys if k.startswith("backbone.")} == tv_keys
    head = {k for k in keys if not k.startswith("backbone.")}
    assert head == {f"classifier.0.convs.{k}.{w}" for k in range(4) for w in ("weight", "bias")}
    assert voc_r101.state_dict()["classifier.0.convs.3.weight"].shape == (21, 2048, 3, 3)
    assert len(keys) == 528 + 104  # docs/method.md §4.2: 528 tensors + 104 num_batches_tracked


def test_dilation_layout(voc_r101):
    b = voc_r101.backbone
    assert b.maxpool.ceil_mode is False and b.maxpool.padding == 1
    # first block of each dilated stage keeps the previous dilation (torchvision), no strides left
    expected = {("layer3", 0): 1, ("layer3", 1): 2, ("layer3", 22): 2, ("layer4", 0): 2, ("layer4", 2): 4}
    for (layer, block), d in expected.items():
        conv = getattr(b, layer)[block].conv2
        assert conv.dilation == (d, d) and conv.padding == (d, d) and conv.stride == (1, 1)
    assert b.layer2[0].conv2.stride == (2, 2)
    rates = [(c.dilation, c.padding) for c in voc_r101.classifier[0].convs]
    assert rates == [((r, r), (r, r)) for r in (6, 12, 18, 24)]


def test_resnet101_output_size_321(voc_r101):
    voc_r101.eval()
    with torch.no_grad():
        out = voc_r101(torch.randn(1, 3, 321, 321))
    assert out.shape == (1, 21, 41, 41)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backbone", ["resnet101", "resnet50", "mobilenet_v3_large"])
def test_output_sizes_shape_only(backbone):
    with torch.device("meta"):  # shape inference without computation
        model = deeplab_v2(19, backbone, pretrained=None).eval()
        sizes = [tuple(model(torch.zeros(2, 3, h, w)).shape) for h, w in [(321, 321), (505, 505), (256, 512)]]
    assert sizes == [(2, 19, 41, 41), (2, 19, 64, 64), (2, 19, 32, 64)]


@pytest.mark.parametrize("size", [(97, 97), (100, 90), (64, 48)])
def test_real_forward_sizes_match_across_backbones(size):
    torch.manual_seed(0)
    expected = (2, 5, -(-size[0] // 8), -(-size[1] // 8))
    for backbone in ("resnet50", "mobilenet_v3_large"):
        model = deeplab_v2(5, backbone, pretrained=None).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 3, *size)).shape == expected


def test_aspp_sums_first_two_branches_by_default():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 30, 30)
    for all_branches, used in ((False, 2), (True, 4)):
        head = ASPPv2(8, 3, all_branches=all_branches)
        expected = sum(F.conv2d(x, c.weight, c.bias, padding=r, dilation=r)
                       for c, r in zip(list(head.convs)[:used], (6, 12, 18, 24)))
        assert torch.allclose(head(x), expected, atol=1e-5)


def test_unused_branches_get_no_update_and_stay_in_state_dict():
    torch.manual_seed(0)
    model = deeplab_v2(3, "mobilenet_v3_large", pretrained=None)
    convs = model.classifier[0].convs
    assert [c.weight.requires_grad for c in convs] == [True, True, False, False]
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("classifier")}
    groups = parameter_groups(model, 0.01)
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9, weight_decay=5e-4)
    model(torch.randn(2, 3, 40, 40)).sum().backward()
    opt.step()
    assert convs[2].weight.grad is None and convs[3].bias.grad is None
    after = model.state_dict()
    for k in ("classifier.0.convs.2.weight", "classifier.0.convs.3.bias"):
        assert torch.equal(after[k], before[k])
    assert not torch.equal(after["classifier.0.convs.0.weight"], before["classifier.0.convs.0.weight"])
    full = deeplab_v2(3, "mobilenet_v3_large", pretrained=None, all_aspp_branches=True)
    assert all(c.weight.requires_grad for c in full.classifier[0].convs)
    assert set(full.state_dict()) == set(model.state_dict())


def test_parameter_groups_cover_backbone_then_head_at_same_lr():
    model = deeplab_v2(4, "mobilenet_v3_large", pretrained=None)
    groups = parameter_groups(model, 0.002)
    assert [g["lr"] for g in groups] == [0.002, 0.002]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.classifier.parameters()}


def test_stride16_logits_resampled_exactly_onto_stride8_grid():
    # A map linear in the input position (value = input pixel row/col of the cell) must stay linear:
    # stride-16 cell j sits at pixel 16j, stride-8 cell i at pixel 8i.
    for height, width in [(97, 97), (256, 512), (100, 90)]:
        h16, w16 = -(-height // 16), -(-width // 16)
        rows = (16.0 * torch.arange(h16)).view(1, 1, h16, 1).expand(1, 1, h16, w16)
        cols = (16.0 * torch.arange(w16)).view(1, 1, 1, w16).expand(1, 1, h16, w16)
        out = logits_to_stride8(torch.cat([rows, cols], 1), height, width)
        h8, w8 = -(-height // 8), -(-width // 8)
        assert out.shape == (1, 2, h8, w8)
        want_rows = torch.tensor([min(8 * i, 16 * (h16 - 1)) for i in range(h8)], dtype=torch.float32)
        want_cols = torch.tensor([min(8 * i, 16 * (w16 - 1)) for i in range(w8)], dtype=torch.float32)
        assert torch.allclose(out[0, 0, :, 0], want_rows, atol=1e-4)
        assert torch.allclose(out[0, 1, 0, :], want_cols, atol=1e-4)


def test_missing_imagenet_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    folder = tmp_path / "hub" / "checkpoints"
    assert hub_checkpoint_dir() == folder
    with pytest.raises(UserError) as err:
        deeplab_v2(21, "resnet101", pretrained="imagenet")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{folder / 'resnet101-63fe2227.pth'}:" in msg
    assert "https://download.pytorch.org/models/resnet101-63fe2227.pth" in msg
    assert list(folder.iterdir()) == []  # nothing half-written


def test_imagenet_weights_found_in_hub_folder_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("must not download when the file is present"))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    source = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    torch.save(source, folder / "mobilenet_v3_large-8738ca79.pth")
    torch.manual_seed(2)
    model = deeplab_v2(21, "mobilenet_v3_large", pretrained="imagenet")
    loaded = model.state_dict()
    for key, value in source.items():
        if key.startswith("features."):
            assert torch.equal(loaded["backbone." + key], value), key
    # the original ResNet-101 file name is accepted as well
    (folder / "resnet101-5d3b4d8f.pth").write_bytes(b"")
    assert imagenet_weights_file("resnet101") == folder / "resnet101-5d3b4d8f.pth"


def test_pretrained_path_errors(tmp_path):
    with pytest.raises(UserError, match="weights file not found"):
        deeplab_v2(21, "resnet50", pretrained=tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot be read"):
        deeplab_v2(21, "resnet50", pretrained=corrupt)
    wrong = tmp_path / "wrong.pth"
    torch.save(torchvision.models.mobilenet_v3_large(weights=None).state_dict(), wrong)
    with pytest.raises(UserError, match="not resnet50 ImageNet weights"):
        deeplab_v2(21, "resnet50", pretrained=wrong)


def test_pretrained_none_string_means_random_init():
    model = deeplab_v2(2, "mobilenet_v3_large", pretrained="none")
    assert model(torch.randn(1, 3, 33, 33)).shape == (1, 2, 5, 5)


def test_tiny_backbone_stride8_and_no_imagenet_weights():
    model = deeplab_v2(21, "tiny", pretrained=None)
    assert model(torch.zeros(2, 3, 97, 97)).shape == (2, 21, 13, 13)  # ceil(97 / 8)
    assert model(torch.zeros(1, 3, 321, 321)).shape[-2:] == (41, 41)
    with pytest.raises(UserError, match="no ImageNet weights"):
        deeplab_v2(21, "tiny", pretrained="imagenet")
