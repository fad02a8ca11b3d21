"""Wall time of detviz's Faster R-CNN against torchvision's, same model, same weights, same input.

``--model tutorial`` (default): the tutorial model of the Faster R-CNN walkthrough (mobilenet_v2
features, one stride-32 level, 15 anchors, RoIAlign 7x7), a batch of two images that pads to
800 x 1248. ``--model mobilenet_v3_320``: torchvision's ``fasterrcnn_mobilenet_v3_large_320_fpn``
against the detviz ``faster_rcnn`` training family (the same layout), 6 classes, a batch of 16
images of 320 x 320 with 2 boxes each, as in ``benchmarks/train_benchmark.py``. Each measurement
alternates the two implementations and reports the median of --repeats runs.

    python benchmarks/faster_rcnn_speed.py [--model mobilenet_v3_320] [--repeats 5] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torchvision
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from detviz.anchors import AnchorGenerator
from detviz.rcnn.model import FasterRCNN
from timing import timed  # benchmarks/timing.py, beside this script

SIZES, RATIOS = ((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),)


def build_pair():
    torch.manual_seed(0)
    backbone = torchvision.models.mobilenet_v2(weights=None).features
    backbone.out_channels = 1280
    reference = TVFasterRCNN(backbone, num_classes=2, rpn_anchor_generator=TVAnchorGenerator(SIZES, RATIOS),
                             box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2))
    backbone = torchvision.models.mobilenet_v2(weights=None).features
    backbone.out_channels = 1280
    ours = FasterRCNN(backbone, num_classes=2, rpn_anchor_generator=AnchorGenerator(SIZES, RATIOS),
                      box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2))
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def build_mobilenet_v3_pair():
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    from detviz.engine.families import get_family

    torch.manual_seed(0)
    reference = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=7)
    ours = get_family("faster_rcnn").build(6, 320)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tutorial", "mobilenet_v3_320"), default="tutorial")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(1)
    if args.model == "tutorial":
        reference, ours = build_pair()
        images = [torch.rand(3, 400, 620, generator=gen), torch.rand(3, 420, 650, generator=gen)]  # -> 800 x 1248
        targets = [{"boxes": torch.tensor([[40.0, 50, 300, 380], [350, 60, 600, 300]]),
                    "labels": torch.tensor([1, 1])},
                   {"boxes": torch.tensor([[100.0, 80, 250, 400]]), "labels": torch.tensor([1])}]
        described = "batch of 2 padded to 800 x 1248"
    else:
        reference, ours = build_mobilenet_v3_pair()
        images = [torch.rand(3, 320, 320, generator=gen) for _ in range(16)]
        targets = [{"boxes": torch.tensor([[10.0, 20, 100, 150], [200, 30, 260, 90]]),
                    "labels": torch.tensor([1, 3])}] * 16
        described = "batch of 16 at 320 x 320"

    def train_step(model):
        model.train()
        torch.manual_seed(0)
        model.zero_grad()
        sum(model(images, targets).values()).backward()

    def inference(model):
        model.eval()
        with torch.no_grad():
            model(images)

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads, "
          f"{args.model}, {described}, median of {args.repeats}")
    for name, step in (("training step (forward + backward)", train_step), ("inference pass", inference)):
        step(reference), step(ours)  # warm-up
        times = {"torchvision": [], "detviz": []}
        for _ in range(args.repeats):
            times["torchvision"].append(timed(lambda: step(reference)))
            times["detviz"].append(timed(lambda: step(ours)))
        tv, dv = statistics.median(times["torchvision"]), statistics.median(times["detviz"])
        print(f"{name:36s} torchvision {tv:7.3f} s   detviz {dv:7.3f} s   detviz / torchvision {dv / tv:5.2f}")


if __name__ == "__main__":
    main()
