"""Command line: ``python -m detviz <command>``.

    python -m detviz data --seed 0 --num-images 24 --out data/synthetic/val
    python -m detviz train --model gfl --steps 100 --out runs/gfl
    python -m detviz evaluate --checkpoint runs/gfl/checkpoint.pt --data data/synthetic/val

Commands are argparse subcommands, each a ``_add_<name>`` that declares its arguments and
a ``_run_<name>`` that does the work; ``data`` writes the synthetic shapes dataset
(``detviz.datasets.synthetic``), ``train`` and ``evaluate`` run ``detviz.train``.
"""
from __future__ import annotations

import argparse
import sys


def _int_at_least(minimum: int, expected: str):
    """An argparse type: an integer >= ``minimum``, else an error saying ``expected``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


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


def _add_train(commands) -> None:
    parser = commands.add_parser(
        "train", help="train NanoDet-m (GFL head) on a COCO folder",
        description="Train NanoDet-m on DIR/images + DIR/annotations.json (default: a cached synthetic "
                    "split), writing OUT/log.csv and OUT/checkpoint.pt.")
    parser.add_argument("--model", choices=("gfl",), required=True, help="model family (gfl: NanoDet-m)")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="COCO folder (default: generate a synthetic train split in the cache)")
    parser.add_argument("--steps", type=_positive_int, default=100, help="total steps (default 100)")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per step (default 8)")
    parser.add_argument("--input-size", type=_positive_int, default=320, help="network input side (default 320)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="default sgd")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default 0.01 sgd, 1e-3 adamw)")
    parser.add_argument("--out", metavar="DIR", default="runs/gfl", help="output folder (default runs/gfl)")
    parser.add_argument("--resume", metavar="CKPT", default=None, help="continue from this checkpoint")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--checkpoint-every", type=_non_negative_int, default=0,
                        help="also save every N steps (default 0: only at the end)")
    parser.add_argument("--synthetic-images", type=_positive_int, default=64,
                        help="size of the generated train split when --data is not given (default 64)")
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from detviz.train import TrainConfig, train

    config = TrainConfig(model=args.model, data=args.data, out=args.out, steps=args.steps,
                         batch_size=args.batch_size, input_size=args.input_size, optimizer=args.optimizer,
                         lr=args.lr, seed=args.seed, resume=args.resume, checkpoint_every=args.checkpoint_every,
                         synthetic_images=args.synthetic_images)
    result = train(config)
    print(f"step {result['step']}: checkpoint {result['checkpoint']}, log {result['log']}")


def _add_evaluate(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="COCO mAP of a training checkpoint on a COCO folder",
        description="Predict on DIR/images, map boxes back to the original image size, write "
                    "<checkpoint>.results.json next to the checkpoint and print pycocotools' table; "
                    "the last line printed is the metrics as one JSON object.")
    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="checkpoint from `train`")
    parser.add_argument("--data", metavar="DIR", required=True, help="COCO folder: images/ + annotations.json")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per forward pass (default 8)")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    from detviz.train import dumps_metrics, evaluate_checkpoint

    metrics, results_path = evaluate_checkpoint(args.checkpoint, args.data, batch_size=args.batch_size)
    print(metrics["summary_text"].rstrip())
    print(f"results: {results_path}")
    print(dumps_metrics(metrics))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detviz", description="detviz command line tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    _add_data(commands)
    _add_train(commands)
    _add_evaluate(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; argument errors exit with status 2, run errors with 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, FloatingPointError) as err:
        parser.exit(1, f"{parser.prog} {args.command}: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
