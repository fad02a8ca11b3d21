"""Train and evaluate detectors side by side on the same generated data and the same wall-clock budget.

    python benchmarks/train_benchmark.py                 # 15 minutes per model, 2 threads
    python benchmarks/train_benchmark.py --budget 60     # a quick look

Models (``--models``): ``gfl`` (detviz NanoDet-m), ``faster_rcnn`` (detviz Faster R-CNN with
torchvision's MobileNetV3-Large 320 FPN layout) and ``torchvision_faster_rcnn``
(``torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None,
weights_backbone=None)``, trained by the same loop). Each one is trained from scratch by
:func:`detviz.engine.train.train` on the same synthetic train split (seed 1, every image with
1 to 12 shapes) with the same batch size and time budget and its own settings (``SETTINGS``:
rate, warm-up, weight average, warp, precision), then evaluated by pycocotools on a held-out
split (seed 2, the generator's defaults: 20% of the images without objects, up to 8 shapes).
Printed per model: mAP@[.5:.95], AP50, steps, training images per second (images through
forward + backward + step, data loading included) and inference images per second (image
decoding, resize, forward, post-processing, on the held-out split, batch 8).

detviz's models are trained by ``python -m detviz train`` (the command is printed); the
torchvision model, which the command line does not know, by the same ``train()`` in this
process. Each run's folder keeps its log, metrics, checkpoint and inference weights.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from detviz.datasets.synthetic import write_dataset
from detviz.engine.families import FAMILIES, FasterRCNNFamily
from detviz.engine.train import (METRICS_NAME, MODEL_NAME, TrainConfig, build_model_from_checkpoint, load_checkpoint,
                                 open_dataset, predict_dataset, train)

# per-model settings (TrainConfig fields); everything else is shared
SETTINGS = {
    # data/checkpoints/README.md gives the probes behind the gfl settings
    "gfl": dict(lr=0.024, warmup_steps=100, ema_decay=0.995, ema_ramp=200.0, warp_scale=(0.8, 1.2),
                warp_translate=0.1, amp=True),
    "faster_rcnn": dict(lr=2e-3, warmup_steps=20, ema_decay=0.9998),  # about 1 image/s: a few dozen steps in all
    "torchvision_faster_rcnn": dict(lr=2e-3, warmup_steps=20, ema_decay=0.9998),
}
# command-line flags of the TrainConfig fields above
FLAGS = {"lr": "--lr", "warmup_steps": "--warmup-steps", "ema_decay": "--ema-decay", "ema_ramp": "--ema-ramp",
         "warp_scale": "--warp-scale", "warp_translate": "--warp-translate", "amp": "--amp"}


def flags(settings: dict) -> list[str]:
    """``python -m detviz train`` arguments for ``settings``."""
    out = []
    for name, value in settings.items():
        if isinstance(value, bool):
            out += [FLAGS[name]] if value else []
        elif isinstance(value, tuple):
            out += [FLAGS[name], *(f"{v:g}" for v in value)]
        else:
            out += [FLAGS[name], f"{value:g}"]
    return out


class TorchvisionFasterRCNN(FasterRCNNFamily):
    """torchvision's own model, trained and evaluated exactly as the detviz Faster R-CNN family."""

    name, description = "torchvision_faster_rcnn", "torchvision fasterrcnn_mobilenet_v3_large_320_fpn"

    def rebuild(self, model_config):
        from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

        from detviz.rcnn.model import FasterRCNNConfig

        cfg = FasterRCNNConfig(**model_config)  # the builder's own defaults are this config's
        model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=cfg.num_classes,
                                                      min_size=cfg.min_size, max_size=cfg.max_size)
        model.cfg = cfg
        return model


REFERENCE_FAMILIES = {f.name: f for f in (TorchvisionFasterRCNN(),)}


def dataset(folder: Path, seed: int, num_images: int, **options) -> Path:
    if not (folder / "annotations.json").is_file():
        write_dataset(folder, overwrite=True, num_images=num_images, seed=seed, **options)
    return folder


def inference_speed(family, module, val_dir: Path, input_size: int) -> float:
    module.eval()
    val = open_dataset(val_dir)
    predict_dataset(family, module, val, input_size)  # warm-up pass
    start = time.perf_counter()
    predict_dataset(family, module, val, input_size)
    return len(val) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=900.0, help="training seconds per model (default 900)")
    parser.add_argument("--models", default="gfl,faster_rcnn,torchvision_faster_rcnn")
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--train-empty-fraction", type=float, default=0.0,
                        help="train images without objects (default 0; the held-out split keeps the generator's 0.2)")
    parser.add_argument("--train-max-objects", type=int, default=12,
                        help="most shapes on a train image (default 12; the held-out split keeps the generator's 8)")
    parser.add_argument("--input-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/benchmark", help="runs and data go here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    train_dir = dataset(out / f"train-n{args.train_images}-seed1-empty{args.train_empty_fraction:g}-max"
                        f"{args.train_max_objects}", 1, args.train_images, empty_fraction=args.train_empty_fraction,
                        max_objects=args.train_max_objects)
    val_dir = dataset(out / f"val-n{args.val_images}-seed2", 2, args.val_images)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"device {args.device}, budget {args.budget:.0f} s per model, batch {args.batch_size}, "
          f"input {args.input_size}, train {args.train_images} images ({args.train_empty_fraction:g} empty, "
          f"<= {args.train_max_objects} shapes each), "
          f"held-out {args.val_images}", flush=True)

    rows = []
    for name in args.models.split(","):
        settings = SETTINGS.get(name, {})
        config = TrainConfig(model=name, data=str(train_dir), val_data=str(val_dir), out=str(out / name),
                             steps=10 ** 7, time_budget=args.budget, batch_size=args.batch_size,
                             input_size=args.input_size, device=args.device, **settings)
        command = [sys.executable, "-m", "detviz", "train", "--model", name, "--data", config.data, "--val-data",
                   config.val_data, "--out", config.out, "--steps", str(config.steps), "--time-budget",
                   f"{args.budget:g}", "--batch-size", str(args.batch_size), "--input-size", str(args.input_size),
                   *flags(settings), "--device", args.device, "--quiet"]
        print(" ".join(command), flush=True)
        family = FAMILIES[name] if name in FAMILIES else REFERENCE_FAMILIES[name]
        if name in FAMILIES:  # detviz's own models: the command line, as a user runs it
            subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        else:  # a reference model, passed to the loop in this process
            train(dataclasses.replace(config, progress=False), family=family)
        checkpoint = load_checkpoint(Path(config.out) / MODEL_NAME, model_family=name)
        metrics = json.loads((Path(config.out) / METRICS_NAME).read_text())[-1]
        module = build_model_from_checkpoint(checkpoint, family=family).to(args.device)
        rows.append({"model": name, "mAP": metrics["mAP"], "AP50": metrics["AP50"], "steps": checkpoint["step"],
                     "train_img_per_s": checkpoint["step"] * args.batch_size / checkpoint["seconds"],
                     "infer_img_per_s": inference_speed(family, module, val_dir, args.input_size)})
        print(json.dumps(rows[-1]), flush=True)

    print(f"\n{'model':26s} {'mAP':>6s} {'AP50':>6s} {'steps':>6s} {'train img/s':>12s} {'infer img/s':>12s}")
    for r in rows:
        print(f"{r['model']:26s} {r['mAP']:6.3f} {r['AP50']:6.3f} {r['steps']:6d} {r['train_img_per_s']:12.1f} "
              f"{r['infer_img_per_s']:12.1f}")


if __name__ == "__main__":
    sys.exit(main())
