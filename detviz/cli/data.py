"""``python -m detviz data``: write the synthetic shapes dataset."""
from __future__ import annotations

import argparse

from detviz.cli.common import fraction, non_negative_int, positive_int


def add(commands) -> None:
    parser = commands.add_parser(
        "data", help="write the synthetic shapes dataset (images/ + annotations.json, COCO)",
        description="Write DIR/images/*.jpg (or png) and DIR/annotations.json: coloured shapes on "
                    "scikit-image textures, deterministic from --seed.")
    parser.add_argument("--seed", type=non_negative_int, required=True, help="random seed (>= 0)")
    parser.add_argument("--num-images", type=positive_int, required=True, help="number of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--size", type=positive_int, default=320, help="image width and height (default 320)")
    parser.add_argument("--empty-fraction", type=fraction, default=0.2,
                        help="fraction of images without objects (default 0.2)")
    parser.add_argument("--max-objects", type=positive_int, default=8,
                        help="most shapes drawn on one image (default 8)")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from detviz.datasets.synthetic import summarize, write_dataset

    coco = write_dataset(args.out, overwrite=args.overwrite, num_images=args.num_images, seed=args.seed,
                         size=args.size, max_objects=args.max_objects, empty_fraction=args.empty_fraction,
                         image_format=args.format)
    print(f"{args.out}: {summarize(coco)}")
