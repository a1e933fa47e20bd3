"""COCO DeepLab-v2 (Caffe ResNet-101 V1) → this project's model, on a synthetic source state dict."""
from __future__ import annotations

import pytest
import torch
import torchvision

from segmentation.convert_coco import COCO_URL, check_conversion, convert_coco_state_dict, main, target_key
from segmentation.models import deeplab_v2
from utils.errors import UserError, run_cli


@pytest.fixture(scope="module")
def coco_source() -> dict[str, torch.Tensor]:
    """The source file's key names and shapes: ResNet-101 without fc / num_batches_tracked + 21-class head."""
    torch.manual_seed(123)
    state = {k: v for k, v in torchvision.models.resnet101(weights=None).state_dict().items()
             if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    for k in range(4):
        state[f"layer5.conv2d_list.{k}.weight"] = torch.randn(21, 2048, 3, 3) * 0.01
        state[f"layer5.conv2d_list.{k}.bias"] = torch.randn(21)
    for k, v in state.items():  # make every tensor differ from any fresh init
        if v.is_floating_point():
            v.add_(torch.rand_like(v) + 0.5)
    assert len(state) == 528
    return state


def test_key_mapping():
    assert target_key("layer5.conv2d_list.3.bias") == "classifier.0.convs.3.bias"
    assert target_key("layer1.0.downsample.0.weight") == "backbone.layer1.0.downsample.0.weight"
    assert target_key("bn1.running_var") == "backbone.bn1.running_var"


def test_voc_all_528_match_and_load(coco_source):
    model = deeplab_v2(21, pretrained=None)
    new_state, report = convert_coco_state_dict(coco_source, model)
    assert report.summary().startswith("matched 528/528")
    assert len(report.matched) == 528 and not report.shape_mismatch and not report.unknown
    assert len(report.not_in_source) == 104
    assert all(k.endswith("num_batches_tracked") for k in report.not_in_source)
    check_conversion(report, "src.pth")
    model.load_state_dict(new_state)
    loaded = model.state_dict()
    for key, value in coco_source.items():
        assert torch.equal(loaded[target_key(key)], value), key


def test_city_520_match_head_keeps_random_init(coco_source):
    torch.manual_seed(0)
    model = deeplab_v2(19, pretrained=None)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    new_state, report = convert_coco_state_dict(coco_source, model)
    assert len(report.matched) == 520 and report.total == 528
    assert sorted(report.shape_mismatch) == sorted(f"classifier.0.convs.{k}.{w}" for k in range(4)
                                                   for w in ("weight", "bias"))
    assert report.summary().startswith("matched 520/528; 8 kept their random init")
    check_conversion(report, "src.pth")
    model.load_state_dict(new_state)
    loaded = model.state_dict()
    for key, value in coco_source.items():
        if key.startswith("layer5."):
            assert torch.equal(loaded[target_key(key)], fresh[target_key(key)])
        else:
            assert torch.equal(loaded[target_key(key)], value), key


def test_cli_writes_weights_only_checkpoint(coco_source, tmp_path, capsys):
    source, out = tmp_path / "resnet101COCO-41f33a49.pth", tmp_path / "voc_coco_resnet101.pt"
    torch.save(coco_source, source, _use_new_zipfile_serialization=False)  # 2018-style file
    main(["--source", str(source), "--num-classes", "21", "--out", str(out)])
    assert "matched 528/528" in capsys.readouterr().out
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert set(saved) == {"model", "optimizer", "lr_scheduler"}
    assert saved["optimizer"] is None and saved["lr_scheduler"] is None
    model = deeplab_v2(21, pretrained=None)
    model.load_state_dict(saved["model"])  # strict
    assert torch.equal(model.state_dict()["backbone.layer4.2.conv3.weight"], coco_source["layer4.2.conv3.weight"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_missing_or_corrupt_source_names_the_download(tmp_path, capsys):
    missing = tmp_path / "resnet101COCO-41f33a49.pth"
    with pytest.raises(UserError) as err:
        main(["--source", str(missing), "--out", str(tmp_path / "o.pt")])
    assert str(err.value).startswith(str(missing)) and COCO_URL in str(err.value)
    missing.write_bytes(b"\x00garbage")
    assert run_cli(main, ["--source", str(missing), "--out", str(tmp_path / "o.pt")]) == 2
    assert COCO_URL in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()


def test_wrong_source_is_rejected(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "something.else": torch.zeros(3)}, wrong)
    with pytest.raises(UserError, match="not the COCO DeepLab-v2"):
        main(["--source", str(wrong), "--out", str(tmp_path / "o.pt")])
