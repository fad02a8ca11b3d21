"""Wall time of one YOLOv3 training step (forward + loss + backward) at 416 x 416, batch 2, on the CPU.

The model is detviz's YOLOv3 with Darknet-53 at ``initial_filters=32`` and 80 classes (keras-yolo3's
COCO configuration, 61.9 M parameters), randomly initialised, in training mode. The loss is
``detviz.yolo.yolo_loss`` on targets built from a few fixed boxes. Each measurement reports the median
of ``--repeats`` runs after one warm-up step; the forward pass alone is timed separately.

    python benchmarks/yolov3_speed.py [--repeats 3] [--threads N] [--initial-filters 32] [--batch 2]
"""
from __future__ import annotations

import argparse
import statistics

import torch

from detviz.yolo import build_targets, yolo_loss
from detviz.yolo.model import YOLOv3Config, build_yolov3
from timing import timed  # benchmarks/timing.py, beside this script

SIZE = 416


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--initial-filters", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_yolov3(YOLOv3Config(num_classes=80, initial_filters=args.initial_filters)).train()
    images = torch.rand(args.batch, 3, SIZE, SIZE)
    boxes = torch.tensor([[20.0, 12.0, 350.0, 416.0], [108.0, 287.0, 168.0, 345.0], [228.0, 273.0, 268.0, 292.0]])
    targets = build_targets([boxes] * args.batch, [torch.tensor([0, 1, 2])] * args.batch, input_size=(SIZE, SIZE),
                            num_classes=80)

    def train_step():
        model.zero_grad(set_to_none=True)
        losses = yolo_loss(model(images), targets.y_true, input_size=(SIZE, SIZE))
        sum(losses.values()).backward()

    def forward_only():
        with torch.no_grad():
            model(images)

    params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"YOLOv3 initial_filters={args.initial_filters}, 80 classes ({params / 1e6:.1f} M parameters), "
          f"batch {args.batch} x 3 x {SIZE} x {SIZE}, median of {args.repeats}")
    steps = (("training step (forward + loss + backward)", train_step), ("forward pass (no grad)", forward_only))
    for name, step in steps:
        step()  # warm-up
        times = [timed(step) for _ in range(args.repeats)]
        print(f"{name:42s} {statistics.median(times):7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
