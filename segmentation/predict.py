"""Segment any image with a trained DeepLab-v2 snapshot: palette PNG masks and overlays.

    python -m segmentation.predict --checkpoint X.pt --input FILE|DIR --out DIR [--dataset voc|city]
        [--coco] [--eval-protocol whole|sliding|msf] [--device auto|cpu|cuda]

For each input image (a file, or every image file directly inside a folder, sorted) it writes
``<out>/<stem>.png``, the predicted class of every pixel as a palette PNG of the input's size (VOC
colormap, or the Cityscapes train-id colours), and ``<out>/<stem>_overlay.png``, the image with
the prediction blended over it; each file is written to a temporary name and renamed into place.

The model sees exactly what it saw at validation time (``docs/method.md §6.1, §8``,
:mod:`segmentation.transforms`): VOC images padded bottom/right with black to the test size
(505×505) and the prediction cropped back to the image; Cityscapes images resized to 512×1024 and the
probabilities resized bilinearly back to the image size; ImageNet normalisation, or the COCO/Caffe
convention (BGR, 0–255, mean subtraction) for models started from the COCO-converted weights.

Settings come from the flags, else from the snapshot's saved config (``X_cfg.json`` beside
``X.pt``, written by every training run), else from the checkpoint itself (the class count says
the dataset: 21 = VOC, 19 = Cityscapes; the backbone is the one whose layers fit), else the
defaults. ``--coco`` cannot be read from the weights: pass it for COCO-initialised models trained
without a saved config.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
CLASSES_TO_DATASET = {21: "voc", 19: "city"}
HEAD_KEY = "classifier.0.convs.0.weight"
OVERLAY_ALPHA = 0.5
CHEAP_FIRST = ("tiny", "mobilenet_v3_large", "resnet50", "resnet101")  # backbones tried when unknown


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m segmentation.predict",
                                description="Palette PNG masks and overlays of a segmentation snapshot's "
                                            "predictions on any images.")
    p.add_argument("--checkpoint", required=True, help="a snapshot (<exp>.pt) or a COCO-converted checkpoint")
    p.add_argument("--input", required=True, help="an image file, or a folder of image files")
    p.add_argument("--out", required=True, help="folder for <stem>.png masks and <stem>_overlay.png overlays")
    p.add_argument("--dataset", choices=["voc", "city"], default=None,
                   help="input convention and palette (default: the saved config, else from the class count)")
    p.add_argument("--coco", action=argparse.BooleanOptionalAction, default=None,
                   help="COCO/Caffe input convention (default: the saved config, else off)")
    p.add_argument("--backbone", default=None, help="default: the saved config, else the one that fits the weights")
    p.add_argument("--all-aspp-branches", action=argparse.BooleanOptionalAction, default=None,
                   help="sum all four ASPP branches (default: the saved config, else off as the original)")
    p.add_argument("--test-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="VOC: pad to at least this size; city: resize to it (default: config, else 505 505 / 512 1024)")
    p.add_argument("--eval-protocol", choices=["whole", "sliding", "msf"], default=None,
                   help="whole image (the paper's), sliding window, or multi-scale + flip (default: config, else whole)")
    p.add_argument("--eval-crop", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="sliding-window size (default: the training crop)")
    p.add_argument("--eval-stride", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="sliding-window stride (default: 2/3 of the window)")
    p.add_argument("--eval-scales", type=float, nargs="+", default=None, help="scales of --eval-protocol msf")
    p.add_argument("--eval-no-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="--eval-protocol msf without the mirrored passes")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    return p


# ----------------------------------------------------------------------------------- inputs
def list_images(path: str | Path) -> list[Path]:
    """The given image file, or the image files directly inside the given folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise UserError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder; "
                            "pass an image file or a folder that holds images")
        return images
    if path.is_file():
        return [path]
    raise UserError(f"{path}: no such file or folder; pass an image file or a folder of images with --input")


def output_stems(images: Sequence[Path]) -> list[str]:
    """``<stem>`` per image; images that share a stem (``a.jpg``, ``a.png``) keep their extension."""
    stems = [p.stem for p in images]
    return [p.name if stems.count(p.stem) > 1 else p.stem for p in images]


def read_config(checkpoint: Path) -> dict[str, Any]:
    """The training run's ``<exp>_cfg.json`` beside ``<exp>.pt`` ({} when there is none)."""
    path = checkpoint.with_name(f"{checkpoint.stem}_cfg.json")
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable run config ({type(exc).__name__}); fix or remove it, or pass the "
                        "settings as flags") from None
    return config if isinstance(config, dict) else {}


def resolve(flag: Any, config: dict[str, Any], key: str, default: Any) -> Any:
    if flag is not None:
        return flag
    value = config.get(key)
    return default if value is None else value


# ----------------------------------------------------------------------------------- model
def head_classes(weights: dict, checkpoint: Path) -> int:
    for key, value in weights.items():
        if key.split("module.")[-1].split("_orig_mod.")[-1] == HEAD_KEY and hasattr(value, "shape"):
            return int(value.shape[0])
    raise UserError(f"{checkpoint}: not a DeepLab-v2 segmentation checkpoint (no {HEAD_KEY}); pass a snapshot "
                    "written by segmentation.main or segmentation.convert_coco")


def load_model(checkpoint: Path, dataset: str, backbone: str | None, all_branches: bool, device):
    """DeepLab-v2 with the checkpoint's weights, in eval mode; the backbone is tried in turn when unknown."""
    from segmentation.run_config import CITY_NUM_CLASSES, VOC_NUM_CLASSES
    from segmentation.models import BACKBONES, deeplab_v2
    from utils.checkpoint import load_checkpoint, load_model_weights

    state = load_checkpoint(checkpoint)
    classes = head_classes(state["model"], checkpoint)
    expected = VOC_NUM_CLASSES if dataset == "voc" else CITY_NUM_CLASSES
    if classes != expected:
        raise UserError(f"{checkpoint}: the model has {classes} classes but --dataset {dataset} has {expected}; "
                        "pass the --dataset the model was trained on")
    cheap_first = [b for b in CHEAP_FIRST if b in BACKBONES] + [b for b in BACKBONES if b not in CHEAP_FIRST]
    candidates = [backbone] if backbone else cheap_first
    if backbone and backbone not in BACKBONES:
        raise UserError(f"--backbone {backbone}: unknown; choose one of {', '.join(BACKBONES)}")
    error: UserError | None = None
    for name in candidates:
        model = deeplab_v2(classes, name, pretrained=None, all_aspp_branches=all_branches)
        try:
            load_model_weights(model, state, name=str(checkpoint))
        except UserError as exc:
            error = exc
            continue
        return model.to(device).eval(), name
    if backbone:
        raise error  # type: ignore[misc]
    raise UserError(f"{checkpoint}: the weights fit none of the backbones {', '.join(BACKBONES)}; pass a snapshot "
                    "written by segmentation.main")


# ----------------------------------------------------------------------------------- prediction
def predict_image(model, rgb: np.ndarray, dataset: str, norm: str, test_size, protocol, device) -> np.ndarray:
    """H×W uint8 class map of an H×W×3 uint8 RGB image, under the test preprocessing of ``dataset``."""
    import torch
    import torch.nn.functional as F
    from torchvision import tv_tensors

    from segmentation.evaluation import probabilities
    from segmentation.transforms import test_transforms

    h, w = rgb.shape[:2]
    image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
    x = test_transforms(dataset, norm, test_size)(image).as_subclass(torch.Tensor)[None].to(device)
    with torch.inference_mode():
        probs = probabilities(model, x, protocol)
        if dataset == "voc":  # padded bottom/right: the image is the top-left h×w
            probs = probs[..., :h, :w]
        elif tuple(probs.shape[-2:]) != (h, w):  # city: resized; back to the image size
            probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
        return probs.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_outputs(out: Path, stem: str, rgb: np.ndarray, mask: np.ndarray, colours: np.ndarray) -> Path:
    from PIL import Image

    from utils.io import write_bytes_atomic

    png = Image.fromarray(mask, mode="P")
    png.putpalette(colours.reshape(-1).tolist())
    mask_path = out / f"{stem}.png"
    write_bytes_atomic(mask_path, png_bytes(png))
    blend = (1 - OVERLAY_ALPHA) * rgb.astype(np.float32) + OVERLAY_ALPHA * colours[mask].astype(np.float32)
    write_bytes_atomic(out / f"{stem}_overlay.png", png_bytes(Image.fromarray(blend.round().astype(np.uint8))))
    return mask_path


def main(argv: Sequence[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    images = list_images(args.input)
    checkpoint = Path(args.checkpoint)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; pass a folder for the masks with --out")
    config = read_config(checkpoint) if checkpoint.is_file() else {}

    from segmentation.datasets import read_rgb
    from segmentation.palette import palette
    from segmentation.run_config import CITY_CROP_SIZE, VOC_CROP_SIZE, Protocol, default_stride, default_test_size
    from utils.checkpoint import load_checkpoint
    from utils.runtime import resolve_device
    from utils.run_log import progress

    device = resolve_device(args.device)
    dataset = args.dataset or config.get("dataset")
    if dataset is None:
        classes = head_classes(load_checkpoint(checkpoint)["model"], checkpoint)
        if classes not in CLASSES_TO_DATASET:
            raise UserError(f"{checkpoint}: a {classes}-class model; pass --dataset voc or city")
        dataset = CLASSES_TO_DATASET[classes]
    if dataset not in ("voc", "city"):
        raise UserError(f"{checkpoint}: saved config names dataset {dataset!r}; pass --dataset voc or city")
    coco = bool(resolve(args.coco, config, "coco", False))
    norm = "coco" if coco else "imagenet"
    model, backbone = load_model(checkpoint, dataset, args.backbone or config.get("backbone"),
                                 bool(resolve(args.all_aspp_branches, config, "all_aspp_branches", False)), device)
    test_size = tuple(resolve(args.test_size, config, "test_size", default_test_size(dataset)))
    crop = tuple(config.get("crop_size") or (VOC_CROP_SIZE if dataset == "voc" else CITY_CROP_SIZE))
    window = tuple(resolve(args.eval_crop, config, "eval_crop", crop))
    stride = tuple(resolve(args.eval_stride, config, "eval_stride", default_stride(window)))
    scales = tuple(resolve(args.eval_scales, config, "eval_scales", [0.5, 0.75, 1.0, 1.25, 1.5]))
    if any(not s > 0 for s in scales) or min(window) < 1 or min(stride) < 1 or min(test_size) < 1:
        raise UserError("--eval-scales, --eval-crop, --eval-stride and --test-size must be positive")
    protocol = Protocol(resolve(args.eval_protocol, config, "eval_protocol", "whole"), window, stride, scales,
                        not resolve(args.eval_no_flip, config, "eval_no_flip", False))
    colours = palette(dataset)
    print(f"{checkpoint}: DeepLab-v2 {backbone}, {dataset} ({norm} input), {protocol.describe()} on {device}; "
          f"{len(images)} image(s) -> {out}", flush=True)
    written = []
    for path, stem in progress(list(zip(images, output_stems(images))), desc="predict", unit="img"):
        rgb = read_rgb(path)
        mask = predict_image(model, rgb, dataset, norm, test_size, protocol, device)
        written.append(write_outputs(out, stem, rgb, mask, colours))
        present = ", ".join(str(int(c)) for c in np.unique(mask))
        print(f"{path} -> {written[-1]} (classes {present})", flush=True)
    return written


if __name__ == "__main__":
    sys.exit(run_cli(main))
