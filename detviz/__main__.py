"""Command line: ``python -m detviz <command>``.

    python -m detviz data --seed 0 --num-images 24 --out data/synthetic/val
    python -m detviz train --model gfl --steps 100 --out runs/gfl
    python -m detviz evaluate --checkpoint runs/gfl/model.pt --data data/synthetic/val

Commands are argparse subcommands, each a ``_add_<name>`` that declares its arguments and
a ``_run_<name>`` that does the work; ``data`` writes the synthetic shapes dataset
(``detviz.datasets.synthetic``), ``train`` and ``evaluate`` run ``detviz.engine.train``.
"""
from __future__ import annotations

import argparse
import math
import sys


def _number(convert, accept, expected: str):
    """An argparse type: ``convert(text)`` (int or float) where ``accept`` holds, else an error saying ``expected``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_non_negative_float = _number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
_fraction = _number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
_decay = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


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
    from detviz.engine.families import FAMILIES
    from detviz.engine.optim import SCHEDULES
    from detviz.engine.train import DEFAULT_LR

    parser = commands.add_parser(
        "train", help="train a detector (gfl, faster_rcnn, yolov3, sparse) on a COCO folder",
        description="Train on DIR/images + DIR/annotations.json (default: a cached synthetic split), writing "
                    "OUT/log.csv (losses per step), OUT/metrics.json (COCO metrics on --val-data), "
                    "OUT/checkpoint.pt (to --resume from) and OUT/model.pt (inference weights). "
                    "Under torchrun, one process per device: the model is wrapped in DistributedDataParallel.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="model families:\n" + "\n".join(f"  {name:12s} {f.description}" for name, f in FAMILIES.items()))
    parser.add_argument("--model", choices=tuple(FAMILIES), required=True, help="model family")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="COCO folder (default: generate a synthetic train split in the cache)")
    parser.add_argument("--val-data", metavar="DIR", default=None,
                        help="COCO folder evaluated every --eval-every steps and at the end")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default runs/MODEL)")
    parser.add_argument("--steps", type=_positive_int, default=100,
                        help="total steps (default 100; an upper bound with --time-budget)")
    parser.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                        help="stop when this much training time is spent; the schedule follows the clock")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per step and process (default 8)")
    parser.add_argument("--input-size", type=_positive_int, default=320, help="network input side (default 320)")
    parser.add_argument("--optimizer", choices=tuple(DEFAULT_LR), default="adamw", help="default adamw")
    parser.add_argument("--lr", type=_positive_float, default=None, help="base rate (default 1e-3 adamw, 0.01 sgd)")
    parser.add_argument("--weight-decay", type=_non_negative_float, default=0.05, help="default 0.05")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="default cosine")
    parser.add_argument("--warmup-steps", type=_non_negative_int, default=0, help="linear warm-up (default 0)")
    parser.add_argument("--ema-decay", type=_decay, default=0.0,
                        help="weight average decay, e.g. 0.9998 (default 0: none)")
    parser.add_argument("--workers", type=_non_negative_int, default=0,
                        help="DataLoader worker processes (default 0: load in the training process)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda; AMP and channels-last on CUDA")
    parser.add_argument("--no-amp", action="store_true", help="keep float32 on CUDA")
    parser.add_argument("--eval-every", type=_non_negative_int, default=0,
                        help="evaluate on --val-data every N steps (default 0: at the end only)")
    parser.add_argument("--checkpoint-every", type=_non_negative_int, default=0,
                        help="also save every N steps (default 0: only at the end)")
    parser.add_argument("--resume", metavar="CKPT", default=None, help="continue from this checkpoint.pt")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--synthetic-images", type=_positive_int, default=64,
                        help="size of the generated train split when --data is not given (default 64)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from detviz.engine.train import TrainConfig, train

    config = TrainConfig(model=args.model, data=args.data, val_data=args.val_data,
                         out=args.out or f"runs/{args.model}", steps=args.steps, time_budget=args.time_budget,
                         batch_size=args.batch_size, input_size=args.input_size, optimizer=args.optimizer,
                         lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
                         warmup_steps=args.warmup_steps, ema_decay=args.ema_decay, workers=args.workers,
                         device=args.device, amp=False if args.no_amp else None, eval_every=args.eval_every,
                         checkpoint_every=args.checkpoint_every, resume=args.resume, seed=args.seed,
                         synthetic_images=args.synthetic_images, progress=not args.quiet)
    result = train(config)
    if result["metrics"]:
        last = result["metrics"][-1]
        print(f"step {last['step']}: mAP {last['mAP']:.4f} AP50 {last['AP50']:.4f}")
    print(f"step {result['step']}: checkpoint {result['checkpoint']}, weights {result['model']}, "
          f"log {result['log']}")


def _add_evaluate(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="COCO mAP of a training checkpoint on a COCO folder",
        description="Predict on DIR/images, map boxes back to the original image size, write "
                    "<checkpoint>.results.json next to the checkpoint and print pycocotools' table; "
                    "the last line printed is the metrics as one JSON object.")
    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="model.pt or checkpoint.pt from `train`")
    parser.add_argument("--data", metavar="DIR", required=True, help="COCO folder: images/ + annotations.json")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    from detviz.engine.train import dumps_metrics, evaluate_checkpoint

    metrics, results_path = evaluate_checkpoint(args.checkpoint, args.data, batch_size=args.batch_size,
                                                   device=args.device)
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
    except (ValueError, TypeError, OSError, FloatingPointError) as err:
        parser.exit(1, f"{parser.prog} {args.command}: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
