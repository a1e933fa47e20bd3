"""Classify any image with a trained WRN-28-2 (CIFAR-10): class and confidence per image.

    python -m classification.predict --checkpoint X.pt --input FILE|DIR [--out FILE.csv] [--device auto|cpu|cuda]

``X.pt`` is a snapshot, an EMA file (``<exp>--ema.pt``) or a bare state dict of a WRN-28-2. Each input
image (a file, or every image file directly inside a folder, sorted) is converted to RGB, resized
to 32×32 (bilinear, antialiased; CIFAR images pass unchanged) and normalised as the test set is
(:func:`classification.augment.eval_transform`, ``docs/method.md §8``). One line per image is printed,
``<path>\\t<class>\\t<confidence>`` (confidence = the softmax maximum); ``--out`` also writes a CSV
``path,class_id,class,confidence`` (atomically).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Sequence

from segmentation.predict import list_images
from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli

BATCH = 256


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m classification.predict",
                                description="Class and confidence of a CIFAR-10 WRN-28-2 for any images.")
    p.add_argument("--checkpoint", required=True, help="a snapshot, an EMA file (<exp>--ema.pt) or a state dict")
    p.add_argument("--input", required=True, help="an image file, or a folder of image files")
    p.add_argument("--out", default=None, help="also write the results to this CSV file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    return p


def main(argv: Sequence[str] | None = None) -> list[tuple[str, int, str, float]]:
    args = build_parser().parse_args(argv)
    images = list_images(args.input)
    if args.out and Path(args.out).is_dir():
        raise UserError(f"{args.out}: is a folder; pass a file name for the CSV with --out")

    import numpy as np
    import torch
    from PIL import Image

    from classification.augment import eval_transform
    from classification.cifar import IMAGE_SIZE
    from classification.models import build_backbone
    from classification.run_config import BACKBONES
    from data.synthetic import CIFAR_LABEL_NAMES
    from segmentation.datasets import read_rgb
    from utils.checkpoint import load_checkpoint, load_model_weights
    from utils.io import write_text_atomic
    from utils.runtime import resolve_device

    device = resolve_device(args.device)
    state = load_checkpoint(args.checkpoint)  # read once; a missing or unreadable file ends here
    for name in BACKBONES:  # the network whose shapes the checkpoint's weights fit
        model = build_backbone(name)
        try:
            load_model_weights(model, state, name=str(args.checkpoint))
            break
        except UserError:
            if name == BACKBONES[-1]:
                raise
    model = model.to(device).eval()
    transform = eval_transform()
    results = []
    for start in range(0, len(images), BATCH):
        chunk = images[start:start + BATCH]
        tensors = []
        for path in chunk:
            image = Image.fromarray(read_rgb(path))
            if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            tensors.append(transform(image))
        with torch.inference_mode():
            probs = model(torch.stack(tensors).to(device)).float().softmax(dim=1).cpu().numpy()
        for path, p in zip(chunk, probs):
            cls = int(np.argmax(p))
            results.append((str(path), cls, CIFAR_LABEL_NAMES[cls], float(p[cls])))
            print(f"{path}\t{CIFAR_LABEL_NAMES[cls]}\t{p[cls]:.4f}", flush=True)
    if args.out:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "class_id", "class", "confidence"])
        writer.writerows([path, cls, name, f"{conf:.6f}"] for path, cls, name, conf in results)
        write_text_atomic(args.out, buffer.getvalue())
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main))
