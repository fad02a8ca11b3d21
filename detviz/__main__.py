"""Command line: ``python -m detviz <command>``.

    python -m detviz data --seed 0 --num-images 24 --out data/synthetic/val

Commands are argparse subcommands, each a ``_add_<name>`` that declares its arguments and
a ``_run_<name>`` that does the work; ``data`` writes the synthetic shapes dataset
(``detviz.datasets.synthetic``).
"""
from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _add_data(commands) -> None:
    parser = commands.add_parser(
        "data", help="write the synthetic shapes dataset (images/ + annotations.json, COCO)",
        description="Write DIR/images/*.jpg (or png) and DIR/annotations.json: coloured shapes on "
                    "scikit-image textures, deterministic from --seed.")
    parser.add_argument("--seed", type=_non_negative_int, required=True, help="random seed (>= 0)")
    parser.add_argument("--num-images", type=_positive_int, required=True, help="number of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--size", type=_positive_int, default=320, help="image width and height (default 320)")
    parser.add_argument("--empty-fraction", type=_fraction, default=0.2,
                        help="fraction of images without objects (default 0.2)")
    parser.add_argument("--max-objects", type=_positive_int, default=8,
                        help="most shapes drawn on one image (default 8)")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in DIR")
    parser.set_defaults(run=_run_data)


def _run_data(args: argparse.Namespace) -> None:
    from detviz.datasets.synthetic import summarize, write_dataset

    coco = write_dataset(args.out, overwrite=args.overwrite, num_images=args.num_images, seed=args.seed,
                         size=args.size, max_objects=args.max_objects, empty_fraction=args.empty_fraction,
                         image_format=args.format)
    print(f"{args.out}: {summarize(coco)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detviz", description="detviz command line tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    _add_data(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; argument errors exit with status 2, run errors with 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, FileExistsError) as err:
        parser.exit(1, f"{parser.prog} {args.command}: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
