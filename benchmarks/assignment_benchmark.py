"""Wall time of ``assignment_report`` on a COCO folder whose json gives no image sizes.

    python benchmarks/assignment_benchmark.py                  # 100 images of 640 x 640, 3 runs
    python benchmarks/assignment_benchmark.py --images 50 --repeats 5

The data: ``detviz.datasets.synthetic.write_dataset`` (``--images`` JPEGs of 640 x 640 on photo
backgrounds, up to 8 shapes each, one image in five empty) in a temporary folder, with ``width`` and
``height`` removed from the json's images. Two assigners, each on its own model's input:

* ATSS as NanoDet-m trains (``ATSSPriorAssigner.from_config(NanoDetConfig())``: 320 x 320, 2100 cells);
* the RPN's max-IoU matcher on FPN anchors (sizes 32..512, three ratios, strides 4..64) at 800 x 800,
  159882 anchors (``MaxIoUPriorAssigner.from_anchor_generator``).

Three ways to the same report, alternated, the median of ``--repeats`` runs after a warm-up:

* earlier: every image decoded to read its size, and the prior-gt IoU computed a second time by the
  report (the dataset seen through ``[]`` only, the assigner through ``assign`` only);
* header sizes: the size read from the file's header, the IoU still computed twice;
* now: header sizes and the assigner's own IoU (``assign_with_ious``).

Printed (stdout): seconds per way and their ratio to now, whether the three reports are equal, and
for the earlier way the seconds spent in ``box_iou`` (the assigner's and the report's second one) and
their share of its time. No time is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import detviz.analysis.assignment as assignment_module
import detviz.assigners as assigners_module
from detviz.analysis.assignment import ATSSPriorAssigner, MaxIoUPriorAssigner, assignment_report
from detviz.anchors import AnchorGenerator
from detviz.boxes import box_iou
from detviz.datasets import CocoDetection
from detviz.datasets.synthetic import write_dataset
from detviz.gfl.model import NanoDetConfig
from timing import timed  # benchmarks/timing.py, beside this script


class AssignOnly:
    """An assigner seen through ``assign`` alone: the report computes the IoU itself, as it used to."""

    def __init__(self, assigner):
        self._assigner = assigner
        for key in ("priors", "num_level_priors", "input_size", "level_names", "name"):
            setattr(self, key, getattr(assigner, key))

    def assign(self, gt_boxes):
        return self._assigner.assign(gt_boxes)


class ItemsOnly:
    """A dataset seen through ``len`` and ``[]`` alone: each image is decoded to be measured, as it used to."""

    def __init__(self, dataset):
        self._dataset, self.class_names = dataset, dataset.class_names

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, index):
        return self._dataset[index]


class IouClock:
    """Seconds spent in ``box_iou`` while the block runs: by ``assignment_report`` itself (the second
    IoU) and by the assigner."""

    def __enter__(self):
        self.seconds = {"assigner": 0.0, "report": 0.0}
        assigners_module.box_iou = assignment_module.box_iou = self._clocked
        return self

    def _clocked(self, boxes1, boxes2):
        caller = "report" if sys._getframe(1).f_code.co_name == "assignment_report" else "assigner"
        start = time.perf_counter()
        result = box_iou(boxes1, boxes2)
        self.seconds[caller] += time.perf_counter() - start
        return result

    def __exit__(self, *exc):
        assigners_module.box_iou = assignment_module.box_iou = box_iou


def make_data(folder: Path, num_images: int) -> CocoDetection:
    coco = write_dataset(folder, num_images=num_images, seed=0, size=640, max_objects=8)
    for image in coco["images"]:
        del image["width"], image["height"]
    (folder / "annotations.json").write_text(json.dumps(coco))
    return CocoDetection(folder / "images", folder / "annotations.json")


def rpn_matcher() -> MaxIoUPriorAssigner:
    generator = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    return MaxIoUPriorAssigner.from_anchor_generator(generator, (800, 800), (4, 8, 16, 32, 64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} JPEGs of 640 x 640, "
          f"no sizes in the json, median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = make_data(Path(tmp), args.images)
        gts = sum(len(dataset._annotations(i)) for i in dataset.image_ids)
        print(f"{gts} gts")
        for assigner in (ATSSPriorAssigner.from_config(NanoDetConfig()), rpn_matcher()):
            ways = {"earlier": (ItemsOnly(dataset), AssignOnly(assigner)),
                    "header sizes": (dataset, AssignOnly(assigner)), "now": (dataset, assigner)}
            reports = {name: assignment_report(*inputs).to_dict() for name, inputs in ways.items()}  # warm-up
            times = {name: [] for name in ways}
            for _ in range(args.repeats):
                for name, inputs in ways.items():
                    times[name].append(timed(lambda: assignment_report(*inputs)))  # noqa: B023 (called at once)
            now = statistics.median(times["now"])
            print(f"\n{assigner.name} at {assigner.input_size[0]} x {assigner.input_size[1]}, "
                  f"{assigner.priors.shape[0]} priors; reports equal: "
                  f"{reports['earlier'] == reports['header sizes'] == reports['now']}")
            for name in ways:
                seconds = statistics.median(times[name])
                print(f"   {name:13s} {seconds:7.3f} s   {seconds / now:5.2f} x now")
            with IouClock() as clock:
                earlier = timed(lambda: assignment_report(*ways["earlier"]))  # noqa: B023
            spent = clock.seconds
            print(f"   earlier way, once more: {earlier:.3f} s, of which box_iou {sum(spent.values()):.3f} s "
                  f"({sum(spent.values()) / earlier:.0%}): the assigner's {spent['assigner']:.3f} s, the report's "
                  f"second one {spent['report']:.3f} s ({spent['report'] / earlier:.0%})")


if __name__ == "__main__":
    main()
