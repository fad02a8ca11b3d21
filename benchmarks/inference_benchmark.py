"""Where ``predict_dataset`` and ``python -m detviz evaluate`` spend their time, next to the model's plain forward.

    python benchmarks/inference_benchmark.py                        # 256 images per set, 5 rounds
    python benchmarks/inference_benchmark.py --images 64 --repeats 3    # a quick look (a few minutes)
    python benchmarks/inference_benchmark.py --threads 1                # on a machine busy with other work

The model is the shipped NanoDet-m (``data/checkpoints/nanodet_m_synthetic.pt``, input 320) in eval
mode. The data: two generated COCO folders in a temporary directory, ``--images`` images each from
:func:`detviz.datasets.synthetic.write_dataset` (seed 2, 320 x 320 JPEGs): ``square`` as written, so
the resize to the input is the identity, and ``480x360``, the same images stretched to 480 x 360
(boxes scaled with them), so a real warp runs.

Timed per set, by ``timing.timed``, one round after another (each round times every row once, so
that a load which comes and goes hits every row alike); the table gives the median over rounds:

* ``forward``: the module alone on already-decoded, already-resized, already-normalised batches of
  8 (``module(batch)`` under ``torch.no_grad``): the yardstick.
* ``predict_dataset``: :func:`detviz.engine.inference.predict_dataset` at batch 8, as the commands
  call it (its default DataLoader workers where it has them), and with ``num_workers=0``.
* ``evaluate_checkpoint``: what ``python -m detviz evaluate`` does apart from drawing and writing
  its pictures: load the checkpoint, predict, COCO results, pycocotools' COCOeval.
* the parts, each alone on the whole set: ``decode`` (``dataset[i]``: the JPEG and its target),
  ``warp`` (the resize to 320 x 320 by :class:`~detviz.datasets.augment.NanoDetWarp`, as
  ``predict_dataset`` did before it skipped identities), ``post-processing`` (``gfl_predict`` on
  the stored outputs of the forward: decoding the boxes, thresholds, NMS), ``map back``
  (``warp_boxes`` through the inverse warp), ``to_coco_results``, ``evaluate_coco`` (COCOeval with
  its copy of the results), ``deepcopy``/``shallow copy`` of the results (what ``evaluate_coco``
  copied before and copies now) and ``json.dumps`` of them (what ``evaluate`` writes).

Printed: milliseconds per image for both sets side by side; for ``predict_dataset`` its throughput
relative to the forward (forward time / its time, per round, median) and for ``evaluate_checkpoint``
its time relative to the forward; the threads, CPUs and the load average before and after (the
figures move with whatever else the machine runs). No time is asserted.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from detviz.datasets.augment import NanoDetWarp, warp_boxes
from detviz.datasets.coco import open_dataset
from detviz.datasets.synthetic import write_dataset
from detviz.engine.inference import evaluate_checkpoint, load_model, predict_dataset
from detviz.evaluation import evaluate_coco, to_coco_results
from detviz.gfl.model import normalize_images
from detviz.gfl.predict import gfl_predict
from timing import timed  # benchmarks/timing.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "data" / "checkpoints" / "nanodet_m_synthetic.pt"
BATCH = 8
SEED = 2
STRETCHED = (480, 360)  # width, height of the second set
WARMUP_IMAGES = 16
COMPARED = ("predict_dataset", "evaluate_checkpoint")  # rows given as a ratio to the forward


# ---------------------------------------------------------------- the data

def write_sets(folder: Path, num_images: int) -> dict[str, Path]:
    """``square``: generated 320 px images; ``480x360``: the same images and boxes stretched."""
    square = folder / "square"
    coco = write_dataset(square, num_images=num_images, seed=SEED, size=320)
    stretched = folder / "480x360"
    (stretched / "images").mkdir(parents=True)
    width, height = STRETCHED
    sx, sy = width / 320, height / 320
    for info in coco["images"]:
        with Image.open(square / "images" / info["file_name"]) as image:
            image.resize((width, height), Image.BILINEAR).save(stretched / "images" / info["file_name"], quality=90)
        info.update(width=width, height=height)
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["bbox"] = [x * sx, y * sy, w * sx, h * sy]
        ann["area"] = ann["area"] * sx * sy
    (stretched / "annotations.json").write_text(json.dumps(coco))
    return {"square": square, "480x360": stretched}


# ---------------------------------------------------------------- one set's rows

class _StoredOutputs:
    """Stands in for the model in ``gfl_predict``: returns the forward's outputs of each batch in turn."""

    def __init__(self, module, outputs):
        self.cfg, self.outputs, self.calls = module.cfg, outputs, 0

    def __call__(self, images):
        cls_scores, bbox_preds = self.outputs[self.calls % len(self.outputs)]
        self.calls += 1
        return cls_scores, bbox_preds


class SetTimings:
    """Everything one round times on one folder, with what the rows need prepared once."""

    def __init__(self, family, module, folder: Path, input_size: int, limit: int | None = None):
        self.family, self.module, self.folder, self.input_size = family, module, folder, input_size
        self.dataset = open_dataset(folder)
        self.dataset.image_ids = self.dataset.image_ids[:limit]  # the first `limit` images only (warm-up)
        self.resize = NanoDetWarp((input_size, input_size), scale=(1.0, 1.0), translate=0.0, flip=0.0)
        self.images = [self.dataset[i][0] for i in range(len(self.dataset))]
        warped = [self._warp(image) for image in self.images]
        self.inverses = [torch.linalg.inv(meta["warp_matrix"]) for _, _, meta in warped]
        resized = torch.stack([w[0] for w in warped])  # [N, 3, S, S]
        self.batches = [normalize_images(resized[i:i + BATCH]) for i in range(0, len(resized), BATCH)]
        with torch.no_grad():
            self.outputs = [module(batch) for batch in self.batches]
        self.predictions = [p for batch, out in zip(self.batches, self.outputs)
                            for p in gfl_predict(_StoredOutputs(module, [out]), batch)]
        self.results = to_coco_results(self._mapped_back(), self.dataset.image_ids, self.dataset.label_to_category_id)
        self.has_workers = "num_workers" in inspect.signature(predict_dataset).parameters

    def _warp(self, image):
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        return self.resize(image, empty, torch.Generator().manual_seed(0))

    def _mapped_back(self):
        return [{**p, "boxes": warp_boxes(p["boxes"], back, width=image.shape[-1], height=image.shape[-2])}
                for p, back, image in zip(self.predictions, self.inverses, self.images)]

    @torch.no_grad()
    def _forward(self):
        for batch in self.batches:
            self.module(batch)

    def _post_processing(self):
        stored = _StoredOutputs(self.module, self.outputs)
        for batch in self.batches:
            gfl_predict(stored, batch)

    def rows(self) -> dict:
        """Row name -> zero-argument function that does that row's work once on the whole set."""
        dataset, family, module, size = self.dataset, self.family, self.module, self.input_size
        rows = {"forward (batches of 8, preloaded)": self._forward,
                "predict_dataset": lambda: predict_dataset(family, module, dataset, size, BATCH)}
        if self.has_workers:
            rows["predict_dataset, num_workers=0"] = lambda: predict_dataset(family, module, dataset, size, BATCH,
                                                                             num_workers=0)
        rows.update({
            "evaluate_checkpoint": lambda: evaluate_checkpoint(CHECKPOINT, dataset, batch_size=BATCH),
            "  decode (dataset[i])": lambda: [dataset[i] for i in range(len(dataset))],
            "  warp to 320 x 320": lambda: [self._warp(image) for image in self.images],
            "  post-processing (gfl_predict)": self._post_processing,
            "  map back (warp_boxes)": self._mapped_back,
            "  to_coco_results": lambda: to_coco_results(self.predictions, dataset.image_ids,
                                                         dataset.label_to_category_id),
            "  evaluate_coco": lambda: evaluate_coco(dataset.coco, self.results),
            "  deepcopy of the results": lambda: copy.deepcopy(self.results),
            "  shallow copy (a dict per result)": lambda: [dict(r) for r in self.results],
            "  json.dumps of the results": lambda: json.dumps(self.results),
        })
        return rows


# ---------------------------------------------------------------- the table

def round_ratios(times: dict, row: str, forward: str) -> list[float]:
    """Per round: forward / row for predict_dataset (throughput), row / forward for evaluate_checkpoint (time)."""
    if row.startswith("predict_dataset"):
        return [f / t for f, t in zip(times[forward], times[row])]
    return [t / f for f, t in zip(times[forward], times[row])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="images per set (default 256)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds, each timing every row once (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    family, module, checkpoint = load_model(CHECKPOINT)
    input_size = checkpoint["train_config"]["input_size"]
    with tempfile.TemporaryDirectory() as tmp:
        sets = {name: SetTimings(family, module, folder, input_size)
                for name, folder in write_sets(Path(tmp), args.images).items()}
        for timings in sets.values():  # warm-up: imports, allocator, worker start-up paths
            for fn in SetTimings(family, module, timings.folder, input_size, WARMUP_IMAGES).rows().values():
                fn()
        times = {name: {row: [] for row in timings.rows()} for name, timings in sets.items()}
        for round_ in range(args.repeats):
            for name, timings in sets.items():
                for row, fn in timings.rows().items():
                    times[name][row].append(timed(fn))
            print(f"round {round_ + 1}/{args.repeats} done", file=sys.stderr)
    load_after = os.getloadavg()

    names = list(sets)
    forward = "forward (batches of 8, preloaded)"
    print(f"ms per image, median of {args.repeats} interleaved rounds, {args.images} images per set, "
          f"batch {BATCH}, input {input_size}")
    print(f"{'':38s}" + "".join(f"{name:>12s}{'ratio':>9s}" for name in names))
    for row in times[names[0]]:
        cells = ""
        for name in names:
            per_image = 1000 * statistics.median(times[name][row]) / args.images
            ratio = ""
            if row.startswith(COMPARED):
                ratio = f"{statistics.median(round_ratios(times[name], row, forward)):.2f}x"
            cells += f"{per_image:12.2f}{ratio:>9s}"
        print(f"{row:38s}{cells}")
    print("ratio: predict_dataset's throughput over the forward's (goal >= 0.8x); evaluate_checkpoint's time over "
          "the forward's (goal <= 1.5x); per round, median")
    for name in names:  # the spread behind each median: a busy machine moves single rounds a lot
        for row in (row for row in times[name] if row.startswith(COMPARED)):
            print(f"{name} {row}: per round {' '.join(f'{v:.2f}' for v in round_ratios(times[name], row, forward))}")
    detections = {name: len(timings.results) for name, timings in sets.items()}
    print(f"detections scored: {detections}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (1 min)")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"wall time {time.perf_counter() - started:.0f} s", file=sys.stderr)
