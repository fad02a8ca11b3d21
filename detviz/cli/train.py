"""``python -m detviz train``: train one of the four detector families on a COCO folder."""
from __future__ import annotations

import argparse

from detviz.cli.common import (decay, fraction, half_fraction, non_negative_float, non_negative_int, positive_float,
                               positive_int)


def add(commands) -> None:
    from detviz.engine.families import FAMILIES
    from detviz.engine.optim import SCHEDULES
    from detviz.engine.train import DEFAULT_LR

    parser = commands.add_parser(
        "train", help="train a detector (gfl, faster_rcnn, yolov3, sparse) on a COCO folder",
        description="Train on DIR/images + DIR/annotations.json (default: a cached synthetic split), writing "
                    "OUT/log.csv (losses per step), OUT/metrics.json (COCO metrics on --val-data), "
                    "OUT/checkpoint.pt (to --resume from), OUT/model.pt (inference weights) and pictures: "
                    "OUT/labels.png (label statistics), OUT/train_batch0-2.jpg (the first batches as the model "
                    "sees them) and OUT/results.png (losses, learning rate, mAP; redrawn at every evaluation). "
                    "Under torchrun, one process per device: the model is wrapped in DistributedDataParallel.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="model families:\n" + "\n".join(f"  {name:12s} {f.description}" for name, f in FAMILIES.items()))
    parser.add_argument("--model", choices=tuple(FAMILIES), required=True, help="model family")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="COCO folder (default: generate a synthetic train split in the cache)")
    parser.add_argument("--val-data", metavar="DIR", default=None,
                        help="COCO folder evaluated every --eval-every steps and at the end")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default runs/MODEL)")
    parser.add_argument("--steps", type=positive_int, default=100,
                        help="total steps (default 100; an upper bound with --time-budget)")
    parser.add_argument("--time-budget", type=positive_float, default=None, metavar="SECONDS",
                        help="stop when this much training time is spent; the schedule follows the clock")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per step and process (default 8)")
    parser.add_argument("--input-size", type=positive_int, default=320, help="network input side (default 320)")
    parser.add_argument("--optimizer", choices=tuple(DEFAULT_LR), default="adamw", help="default adamw")
    parser.add_argument("--lr", type=positive_float, default=None, help="base rate (default 1e-3 adamw, 0.01 sgd)")
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.05, help="default 0.05")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="default cosine")
    parser.add_argument("--warmup-steps", type=non_negative_int, default=0, help="linear warm-up (default 0)")
    parser.add_argument("--ema-decay", type=decay, default=0.0,
                        help="weight average decay, e.g. 0.9998 (default 0: none)")
    parser.add_argument("--ema-ramp", type=positive_float, default=2000.0, metavar="STEPS",
                        help="the average's decay rises as decay * (1 - exp(-step / STEPS)) (default 2000); "
                             "a short run needs a short ramp, or the average stays close to the last weights")
    parser.add_argument("--warp-scale", type=positive_float, nargs=2, default=(0.6, 1.4), metavar=("LOW", "HIGH"),
                        help="range of the training warp's random zoom (default 0.6 1.4)")
    parser.add_argument("--warp-translate", type=half_fraction, default=0.2, metavar="FRACTION",
                        help="largest random shift of the training warp, a fraction of the image side "
                             "(default 0.2, at most 0.5)")
    parser.add_argument("--workers", type=non_negative_int, default=0,
                        help="DataLoader worker processes (default 0: load in the training process)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda; AMP and channels-last on CUDA")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--amp", action="store_true",
                           help="mixed precision on the CPU too: the forward pass in bfloat16 (fast where the "
                                "CPU has AVX-512 BF16 or AMX; slow where it has not)")
    precision.add_argument("--no-amp", action="store_true", help="keep float32 on CUDA")
    parser.add_argument("--eval-every", type=non_negative_int, default=0,
                        help="evaluate on --val-data every N steps (default 0: at the end only)")
    parser.add_argument("--checkpoint-every", type=non_negative_int, default=0,
                        help="also save every N steps (default 0: only at the end)")
    parser.add_argument("--resume", metavar="CKPT", default=None, help="continue from this checkpoint.pt")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--synthetic-images", type=positive_int, default=64,
                        help="size of the generated train split when --data is not given (default 64)")
    parser.add_argument("--overfit-batch", type=positive_int, default=0, metavar="N",
                        help="can it learn at all? train on the first N images with a gt as one fixed batch, "
                             "without augmentation, and evaluate on that batch every --eval-every steps "
                             "(default 10); the batch is written to OUT/overfit_batch.json")
    parser.add_argument("--stop-at-ap50", type=fraction, default=None, metavar="AP50",
                        help="stop at the first evaluation whose AP50 reaches this (0..1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run already in --out (otherwise only --resume continues it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-pictures", action="store_true",
                        help="skip labels.png, train_batch0-2.jpg and results.png")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from detviz.engine.train import TrainConfig, train

    config = TrainConfig(model=args.model, data=args.data, val_data=args.val_data,
                         out=args.out or f"runs/{args.model}", steps=args.steps, time_budget=args.time_budget,
                         batch_size=args.batch_size, input_size=args.input_size, optimizer=args.optimizer,
                         lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
                         warmup_steps=args.warmup_steps, ema_decay=args.ema_decay, ema_ramp=args.ema_ramp,
                         warp_scale=tuple(args.warp_scale), warp_translate=args.warp_translate, workers=args.workers,
                         device=args.device, amp=False if args.no_amp else True if args.amp else None, eval_every=args.eval_every,
                         checkpoint_every=args.checkpoint_every, resume=args.resume, seed=args.seed,
                         synthetic_images=args.synthetic_images, progress=not args.quiet,
                         overfit_batch=args.overfit_batch, stop_at_ap50=args.stop_at_ap50, overwrite=args.overwrite)
    observers = []
    if not args.no_pictures:
        from detviz.viz.training import TrainingPictures
        observers.append(TrainingPictures(config.out))
    result = train(config, observers=observers)
    if result["metrics"]:
        last = result["metrics"][-1]
        print(f"step {last['step']}: mAP {last['mAP']:.4f} AP50 {last['AP50']:.4f}")
    print(f"step {result['step']}: checkpoint {result['checkpoint']}, weights {result['model']}, "
          f"log {result['log']}")
