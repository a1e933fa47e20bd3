"""``python -m data.synthetic``: the command line of the synthetic dataset generators."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from data.synthetic.cifar10 import make_cifar10
from data.synthetic.cityscapes import CITY_DEFAULT_SIZE, make_cityscapes
from data.synthetic.common import KIND_CODES
from data.synthetic.voc import VOC_DEFAULT_SIZE_RANGE, make_voc
from utils.cli import ArgumentParser
from utils.errors import UserError


def main(argv: Sequence[str] | None = None) -> Path:
    parser = ArgumentParser(
        prog="python -m data.synthetic",
        description="Write a small deterministic synthetic dataset in the official on-disk format.")
    parser.add_argument("--kind", required=True, choices=sorted(KIND_CODES))
    parser.add_argument("--root", required=True, help="folder to write into (created if missing)")
    parser.add_argument("--num-train", type=int, default=None,
                        help="training images (cifar10: per class); default voc 200, cityscapes 40, cifar10 100")
    parser.add_argument("--num-val", type=int, default=None,
                        help="val images (cifar10: test images per class); default voc 50, cityscapes 12, cifar10 20")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                       help="fixed image size (voc, cityscapes; cityscapes default 64 128)")
    sizes.add_argument("--size-range", type=int, nargs=2, metavar=("LO", "HI"),
                       help="voc only: h and w drawn uniformly from LO..HI (default 72 128)")
    sizes.add_argument("--image-size", type=int, metavar="S",
                       help="shorthand: voc S x S, cityscapes S x 2S")
    parser.add_argument("--classes", type=int, nargs="+", default=None, metavar="ID",
                        help="voc only: draw objects of these classes (1..20) only (default all; fewer make an easier set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1,
                        help="render in this many processes (same output); default 1")
    args = parser.parse_args(argv)

    counts = {k: v for k, v in (("num_train", args.num_train), ("num_val", args.num_val)) if v is not None}
    common = {"seed": args.seed, "workers": args.workers}
    if args.kind == "cifar10":
        if args.size or args.size_range or args.image_size:
            raise UserError(f"{args.root}: CIFAR-10 images are always 32x32; drop --size/--size-range/--image-size")
        path = make_cifar10(args.root, num_train_per_class=counts.get("num_train", 100),
                            num_test_per_class=counts.get("num_val", 20), **common)
    elif args.kind == "voc":
        size = tuple(args.size) if args.size else (
            (args.image_size, args.image_size) if args.image_size else None)
        path = make_voc(args.root, size=size, size_range=tuple(args.size_range or VOC_DEFAULT_SIZE_RANGE),
                        classes=args.classes, **counts, **common)
    else:
        if args.size_range:
            raise UserError(f"{args.root}: --size-range is for voc only; use --size H W for cityscapes")
        size = tuple(args.size) if args.size else (
            (args.image_size, 2 * args.image_size) if args.image_size else CITY_DEFAULT_SIZE)
        path = make_cityscapes(args.root, size=size, **counts, **common)
    print(f"synthetic {args.kind} dataset ready at {path}", flush=True)
    return path
