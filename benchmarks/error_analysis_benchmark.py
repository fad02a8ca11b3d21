"""Wall time of detviz's error analysis against tidecv and pycocotools, on one generated COCO set.

    python benchmarks/error_analysis_benchmark.py                  # 5000 images, ~100 detections each
    python benchmarks/error_analysis_benchmark.py --images 200     # a quick look (about a minute)

The data: ``--images`` images of 640 x 480 (no image files) with 0..15 gts each (one image in
twenty empty, about one gt in a hundred a crowd region), ``--categories`` category ids drawn
from 1..90 with a skewed class frequency, and about ``--detections`` detections per image made
from the gts: tight boxes (true positives), shifted boxes (Loc), wrong classes (Cls), both
(Both), second copies (Dupe), gts left without one (Miss), boxes on nothing (Bkg), boxes in
crowd regions and low-scoring clutter around the objects, so that every TIDE type occurs. All
of it comes from ``--seed`` and is written to a temporary folder as ``data/annotations.json`` and
``results.json`` (removed at the end unless ``--keep``).

Every step below first runs once on the first 50 images (imports, caches, fonts), then once on
the whole set, timed by ``timing.timed``:

* TIDE: ``detviz.evaluation.tide_errors`` against tidecv 1.0.1's ``TIDE().evaluate`` at IoU 0.5
  with ``get_main_errors`` and ``get_special_errors`` (the same work: one run and every fix;
  tidecv's json loading into its ``Data`` timed apart), and tidecv as its README runs it,
  ``evaluate_range`` (ten IoU thresholds, loading included) with ``get_main_errors``. The
  figures are compared and the largest difference printed. tidecv runs as
  ``tests/evaluation/test_tide.py`` runs it: its seaborn ``Plotter`` replaced by a stub (it would
  restyle matplotlib for the whole process) and ``TIDE_PATH`` in the temporary folder.
* COCO: ``match_detections`` against pycocotools' ``loadRes`` + ``COCOeval.evaluate()`` (their
  true positives at every IoU threshold compared); ``coco_metrics`` (what ``analyze_results``
  uses) against ``loadRes`` + ``evaluate()`` + ``accumulate()`` + ``summarize()`` (the twelve
  stats and the whole precision array compared).
* ``confusion_matrix`` (one_to_one and many_to_one), ``optimal_lrp`` and ``lrp_from_records`` (the
  LRP ``analyze_results`` reads off the matching above): no reference here.
* What ``python -m detviz analyze --results R --data D`` does without images, in this process:
  ``analyze_results``, ``summary``, the two json files, ``object_rows`` and ``objects.csv``,
  ``write_report(analysis, out)``; then the command itself, end to end, in a subprocess on a
  folder that holds only ``annotations.json``.
* Where the time goes: the parts of ``analyze_results`` called alone (those the table already
  timed are taken from it), largest first.

The references run first, while this process holds nothing else, and garbage is collected
between steps. Printed (stdout): the table (seconds; detviz / reference for the paired rows;
the largest resident memory seen during the step, sampled every 0.1 s), the agreement checks,
the parts of ``analyze_results``, versions, CPU, threads, and at the end the peak resident
memory of the run (``getrusage``). Progress goes to stderr. No time is asserted.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import importlib.metadata
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detviz.analysis.errors import DEFAULT_SCORE_THRESH, analyze_results, object_rows, summary, write_object_rows
from detviz.analysis.missed import why_missed
from detviz.evaluation import (STAT_NAMES, coco_metrics, confusion_matrix, match_detections, optimal_lrp,
                               precision_recall_curves, tide_errors)
from detviz.evaluation.lrp import lrp_from_records
from detviz.evaluation.tide import BEYOND_MAX_DETS, MAIN_ERRORS, SPECIAL_ERRORS
from detviz.viz.report import write_report
from timing import timed  # benchmarks/timing.py, beside this script

WIDTH, HEIGHT = 640, 480
START = time.perf_counter()
WARMUP_IMAGES = 50
WATCH_INTERVAL = 0.1  # seconds between reads of resident memory (this process' steps, the subprocess)
# what becomes of a gt: a tight same-class box, a shifted one, a wrong class, both, a tight box
# and a second copy, nothing
FATES = ("tp", "loc", "cls", "both", "dupe", "miss")
FATE_P = (0.55, 0.10, 0.07, 0.04, 0.08, 0.16)
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the data

def _clip(box) -> list[float]:
    """xywh clipped to the image, at least 1 x 1, rounded as detectors write them."""
    x, y, w, h = box
    x1, y1 = min(max(x, 0.0), WIDTH - 1.0), min(max(y, 0.0), HEIGHT - 1.0)
    x2, y2 = min(max(x + w, x1 + 1.0), WIDTH), min(max(y + h, y1 + 1.0), HEIGHT)
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def _random_box(rng, small=8.0, large=400.0) -> list[float]:
    w = float(np.exp(rng.uniform(np.log(small), np.log(large))))
    h = min(w * float(np.exp(rng.normal(0.0, 0.4))), HEIGHT - 1.0)
    w = min(w, WIDTH - 1.0)
    return _clip([rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h), w, h])


def _jittered(rng, box, spread) -> list[float]:
    """``box`` with its corners moved by about ``spread`` times its size."""
    x, y, w, h = box
    dx, dy, dw, dh = rng.normal(0.0, spread, size=4)
    return _clip([x + dx * w, y + dy * h, w * (1 + dw), h * (1 + dh)])


def _shifted(rng, box) -> list[float]:
    """``box`` moved by 0.4..0.8 of its size: IoU with it roughly 0.1..0.45 (a Loc error)."""
    x, y, w, h = box
    sx, sy = rng.choice([-1.0, 1.0], size=2)
    return _clip([x + sx * rng.uniform(0.4, 0.8) * w, y + sy * rng.uniform(0.0, 0.3) * h, w, h])


def make_dataset(num_images: int, detections: int, num_categories: int, seed: int) -> tuple[dict, list]:
    """A COCO ground truth dict and a results list (see the module docstring)."""
    rng = np.random.default_rng(seed)
    category_ids = sorted(int(c) for c in rng.choice(np.arange(1, 91), size=num_categories, replace=False))
    frequency = 1.0 / np.arange(1, num_categories + 1) ** 0.8
    frequency = frequency[rng.permutation(num_categories)] / frequency.sum()
    images, annotations, results = [], [], []

    def det(image_id, category_id, box, score):
        results.append({"image_id": image_id, "category_id": category_id, "bbox": box, "score": round(score, 5)})

    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": WIDTH, "height": HEIGHT})
        num_gts = 0 if rng.random() < 0.05 else int(rng.integers(1, 16))
        gts = []
        for _ in range(num_gts):
            crowd = rng.random() < 0.01
            box = _random_box(rng, 80.0, 400.0) if crowd else _random_box(rng)
            category_id = int(rng.choice(category_ids, p=frequency))
            x, y, w, h = box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                "bbox": box, "area": round(w * h, 2), "iscrowd": int(crowd),
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
            gts.append((category_id, box, crowd))
        first = len(results)
        for category_id, box, crowd in gts:
            other = int(rng.choice([c for c in category_ids if c != category_id]))
            if crowd:  # a few boxes inside the crowd region
                x, y, w, h = box
                for _ in range(int(rng.integers(1, 4))):
                    det(image_id, category_id, _clip([x + rng.uniform(0, 0.6) * w, y + rng.uniform(0, 0.6) * h,
                                                      0.3 * w, 0.3 * h]), rng.beta(2, 3))
                continue
            fate = FATES[int(rng.choice(len(FATES), p=FATE_P))]
            if fate in ("tp", "dupe"):
                det(image_id, category_id, _jittered(rng, box, 0.04), rng.beta(5, 2))
            if fate == "dupe":
                det(image_id, category_id, _jittered(rng, box, 0.06), rng.beta(2, 3))
            if fate == "loc":
                det(image_id, category_id, _shifted(rng, box), rng.beta(2, 3))
            if fate == "cls":
                det(image_id, other, _jittered(rng, box, 0.04), rng.beta(2, 3))
            if fate == "both":
                det(image_id, other, _shifted(rng, box), rng.beta(1.5, 4))
        # the rest, up to about `detections`: low-scoring clutter near objects and boxes on nothing
        wanted = max(int(rng.poisson(detections)), len(results) - first)
        for _ in range(wanted - (len(results) - first)):
            if gts and rng.random() < 0.6:
                category_id, box, _ = gts[int(rng.integers(len(gts)))]
                if rng.random() < 0.5:
                    category_id = int(rng.choice(category_ids, p=frequency))
                det(image_id, category_id, _jittered(rng, box, rng.uniform(0.05, 0.6)), rng.beta(1, 8))
            else:
                det(image_id, int(rng.choice(category_ids, p=frequency)), _random_box(rng), rng.beta(1, 6))
        mine = results[first:]  # a detector's own order within the image
        results[first:] = [mine[i] for i in rng.permutation(len(mine))]
    coco_dict = {"images": images, "annotations": annotations,
                 "categories": [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in category_ids]}
    return coco_dict, results


def load_coco(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
        return COCO(str(path))


def subset(coco_dict: dict, results: list, num_images: int) -> tuple[dict, list]:
    """The first ``num_images`` images of ``coco_dict`` and their detections."""
    kept = {image["id"] for image in coco_dict["images"][:num_images]}
    return ({**coco_dict, "images": coco_dict["images"][:num_images],
             "annotations": [a for a in coco_dict["annotations"] if a["image_id"] in kept]},
            [r for r in results if r["image_id"] in kept])


# ---------------------------------------------------------------- the references

@contextlib.contextmanager
def quiet_tidecv(folder: Path):
    """tidecv as the tests run it: no seaborn restyling (Plotter stubbed), TIDE_PATH in ``folder``."""
    import tidecv.quantify

    saved_plotter, saved_path = tidecv.quantify.P.Plotter, os.environ.get("TIDE_PATH")
    tidecv.quantify.P.Plotter = lambda *args, **kwargs: None
    os.environ["TIDE_PATH"] = str(folder / "tide_path")
    try:
        yield
    finally:
        tidecv.quantify.P.Plotter = saved_plotter
        if saved_path is None:
            os.environ.pop("TIDE_PATH", None)
        else:
            os.environ["TIDE_PATH"] = saved_path


def tidecv_load(gt_path, results_path):
    from tidecv import datasets
    with contextlib.redirect_stdout(io.StringIO()):
        return datasets.COCO(str(gt_path)), datasets.COCOResult(str(results_path))


def tidecv_at_50(gt, preds) -> dict:
    """tidecv's evaluate at IoU 0.5 and every fix: {"ap50", "counts", main and special dAPs}."""
    from tidecv import TIDE
    tide = TIDE()
    with contextlib.redirect_stdout(io.StringIO()):
        run = tide.evaluate(gt, preds, mode=TIDE.BOX)
        figures = {"ap50": run.ap, **tide.get_main_errors()[preds.name], **tide.get_special_errors()[preds.name]}
        figures["counts"] = {error.short_name: n for error, n in run.count_errors().items()}
    return figures


def tidecv_range(gt_path, results_path) -> dict:
    """As tidecv's README: evaluate_range over 0.5:0.95, then get_main_errors (loading included)."""
    from tidecv import TIDE, datasets
    tide = TIDE()
    with contextlib.redirect_stdout(io.StringIO()):
        tide.evaluate_range(datasets.COCO(str(gt_path)), datasets.COCOResult(str(results_path)), mode=TIDE.BOX)
        errors = tide.get_main_errors()
    name = next(iter(errors))
    return {"ap50": tide.runs[name].ap, **errors[name]}


def tidecv_difference(ours, theirs: dict, names) -> tuple[float, str]:
    """The largest |detviz - tidecv| over ``names`` (in AP points) and where it is."""
    mine = {"ap50": ours.ap50, **ours.errors, **ours.special}
    return max((abs(mine[n] - theirs[n]), n) for n in names)


def cocoeval_true_positives(cocoeval: COCOeval) -> list[int]:
    """True positives per IoU threshold, area "all", from COCOeval.evalImgs."""
    tp = np.zeros(len(cocoeval.params.iouThrs), dtype=np.int64)
    for e in cocoeval.evalImgs:
        if e is not None and e["aRng"] == cocoeval.params.areaRng[0] and len(e["dtIds"]):
            tp += ((e["dtMatches"] > 0) & ~e["dtIgnore"]).sum(axis=1)
    return tp.tolist()


def records_true_positives(records) -> list[int]:
    return [records.tp_fp_fn(t)["tp"] for t in records.iou_thresholds]


# ---------------------------------------------------------------- report

def versions() -> str:
    found = []
    for name in ("torch", "numpy", "pycocotools", "tidecv", "matplotlib"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def run_watched(command: list[str], log: Path) -> tuple[int, float]:
    """Run ``command`` (stdout and stderr to ``log``.out / .err); ``(exit status, peak RSS in GiB)``.

    The peak is the child's VmHWM, read from /proc while it runs: RUSAGE_CHILDREN's ru_maxrss
    would report this process's own peak, which a child inherits when it is forked.
    """
    peak_kib = 0
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err)
        while process.poll() is None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kib = max(peak_kib, int(line.split()[1]))
            time.sleep(WATCH_INTERVAL)
    return process.returncode, peak_kib / 2 ** 20


def timed_call(fn):
    """``(seconds, fn())``, timed by ``timed``."""
    box = []
    seconds = timed(lambda: box.append(fn()))
    return seconds, box[0]


def release() -> None:
    """Collect garbage and hand freed heap back to the system, so one step's leftovers do not
    count in the next one's resident memory."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_gib() -> float:
    """This process' resident memory now, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30


class RssWatch:
    """The largest resident memory seen while the block runs, sampled every WATCH_INTERVAL s by a
    thread (getrusage's ru_maxrss only knows the peak of the whole run)."""

    def __enter__(self):
        self.peak, self._stop = rss_gib(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(WATCH_INTERVAL):
            self.peak = max(self.peak, rss_gib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_gib())


def progress(text: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f} s] {text}", file=sys.stderr, flush=True)


class Table:
    """Rows of (group, component, seconds, reference seconds or None, peak RSS during it, note),
    printed by group at the end."""

    def __init__(self):
        self.rows = []

    def time(self, group: str, name: str, fn, reference: float | None = None, note: str = ""):
        """Run ``fn`` once, timed; add its row; return ``(seconds, fn())``."""
        progress(f"{name} ...")
        release()
        box = []
        with RssWatch() as watch:
            seconds = timed(lambda: box.append(fn()))
        self.rows.append([group, name, seconds, reference, watch.peak, note])
        progress(f"{name}: {seconds:.2f} s")
        return seconds, box[0]

    def print(self) -> None:
        print(f"\n{'component (each once, after a warm-up on the first images)':62s} {'seconds':>9s} "
              f"{'detviz/ref':>10s} {'peak RSS':>9s}")
        for group in dict.fromkeys(row[0] for row in self.rows):
            print(f"-- {group}")
            for _, name, seconds, reference, peak, note in (row for row in self.rows if row[0] == group):
                self._print_row(name, seconds, reference, peak, note)

    @staticmethod
    def _print_row(name, seconds, reference, peak, note) -> None:
        ratio = "" if reference is None else f"{seconds / reference:.2f}"
        peak = "" if peak is None else f"{peak:.2f} GiB"
        print(f"  {name:60s} {seconds:9.2f} {ratio:>10s} {peak:>9s}  {note}".rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="images (default 5000)")
    parser.add_argument("--detections", type=int, default=100, help="about this many detections per image (100)")
    parser.add_argument("--categories", type=int, default=80, help="categories, 6..80 (default 80)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args()
    if not 6 <= args.categories <= 80:
        parser.error(f"--categories must be in 6..80, got {args.categories}")
    if args.images < 1 or args.detections < 1:
        parser.error("--images and --detections must be positive")

    folder = Path(tempfile.mkdtemp(prefix="detviz-error-analysis-"))
    try:
        with quiet_tidecv(folder):
            run(args, folder)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"peak resident memory of this process: {peak_rss_gib():.2f} GiB (getrusage ru_maxrss); "
          f"total {time.perf_counter() - START:.0f} s")


def warm_up(folder: Path, coco_dict: dict, results: list) -> None:
    """Every timed component once on the first WARMUP_IMAGES images: imports, caches, fonts."""
    small_dict, small_results = subset(coco_dict, results, WARMUP_IMAGES)
    small_gt, small_res = folder / "warmup_gt.json", folder / "warmup_results.json"
    small_gt.write_text(json.dumps(small_dict))
    small_res.write_text(json.dumps(small_results))
    small = load_coco(small_gt)
    tidecv_at_50(*tidecv_load(small_gt, small_res))
    tidecv_range(small_gt, small_res)
    with contextlib.redirect_stdout(io.StringIO()):
        cocoeval = COCOeval(small, small.loadRes(copy.deepcopy(small_results)), "bbox")
        cocoeval.evaluate(), cocoeval.accumulate(), cocoeval.summarize()
    tide_errors(small, small_results)
    match_detections(small, small_results)
    precision_recall_curves(coco_metrics(small, small_results))
    for mode in ("one_to_one", "many_to_one"):
        confusion_matrix(small, small_results, mode=mode)
    optimal_lrp(small, small_results)
    analysis = analyze_results(small, small_results)
    why_missed(analysis.records)
    json.dumps(summary(analysis))
    write_object_rows(folder / "warmup_objects.csv", object_rows(analysis))
    (folder / "warmup_report").mkdir()
    write_report(analysis, folder / "warmup_report")


def run(args, folder: Path) -> None:
    print(f"{versions()}; {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.get_num_threads()} threads; "
          f"Python {platform.python_version()}")
    progress("making the data ...")
    seconds, (coco_dict, results) = timed_call(
        lambda: make_dataset(args.images, args.detections, args.categories, args.seed))
    data_dir = folder / "data"
    data_dir.mkdir()
    gt_path, results_path = data_dir / "annotations.json", folder / "results.json"
    gt_path.write_text(json.dumps(coco_dict))
    results_path.write_text(json.dumps(results))
    num_crowd = sum(a["iscrowd"] for a in coco_dict["annotations"])
    print(f"data: {len(coco_dict['images'])} images of {WIDTH} x {HEIGHT}, {len(coco_dict['categories'])} categories, "
          f"{len(coco_dict['annotations'])} gts ({num_crowd} crowd), {len(results)} detections "
          f"({len(results) / len(coco_dict['images']):.1f} per image), seed {args.seed}; made in {seconds:.1f} s; "
          f"annotations.json {gt_path.stat().st_size / 2 ** 20:.1f} MiB, "
          f"results.json {results_path.stat().st_size / 2 ** 20:.1f} MiB")
    progress("warm-up ...")
    warm_up(folder, coco_dict, results)
    del coco_dict, results
    table, lines = Table(), []

    # ---- the references, each while this process holds nothing else
    tide, coco_ref = "TIDE", "COCO matching and metrics"
    t_load, loaded = table.time(tide, "tidecv: datasets.COCO + datasets.COCOResult",
                                lambda: tidecv_load(gt_path, results_path))
    t_tidecv, figures = table.time(tide, "tidecv: evaluate(IoU .5) + main + special errors",
                                   lambda: tidecv_at_50(*loaded))
    del loaded
    _, range_figures = table.time(tide, "tidecv: evaluate_range(.5:.95) + get_main_errors",
                                  lambda: tidecv_range(gt_path, results_path), note="loading included")
    t_coco, coco = table.time(coco_ref, "pycocotools: COCO(annotations.json)", lambda: load_coco(gt_path))
    t_json, reference_results = table.time(coco_ref, "json.loads(results.json)",
                                           lambda: json.loads(results_path.read_text()))

    def load_res():
        with contextlib.redirect_stdout(io.StringIO()):  # loadRes prints; it writes into the dicts
            return coco.loadRes(reference_results)
    t_loadres, dt = table.time(coco_ref, "pycocotools: coco.loadRes(results)", load_res)
    cocoeval = COCOeval(coco, dt, "bbox")
    steps = {}
    for step in ("evaluate", "accumulate", "summarize"):
        def call(step=step):
            with contextlib.redirect_stdout(io.StringIO()):
                getattr(cocoeval, step)()
        steps[step], _ = table.time(coco_ref, f"pycocotools: COCOeval.{step}()", call)
    reference_tp, reference_stats = cocoeval_true_positives(cocoeval), cocoeval.stats.tolist()
    reference_precision = cocoeval.eval["precision"]
    del reference_results, dt, cocoeval
    release()

    # ---- detviz, on the same data
    progress("json.loads(results.json) again, for detviz ...")
    results = json.loads(results_path.read_text())
    parts = {}  # where the time goes in analyze_results
    parts["tide_errors"], ours = table.time(tide, "detviz: tide_errors(coco, results)",
                                            lambda: tide_errors(coco, results), t_tidecv,
                                            note="ratio vs tidecv evaluate(.5) + errors")
    lines.append(f"tide_errors / (tidecv load + evaluate(.5) + errors): "
                 f"{parts['tide_errors'] / (t_load + t_tidecv):.2f}")
    names = ("ap50", *MAIN_ERRORS, *SPECIAL_ERRORS)
    difference, where = tidecv_difference(ours, figures, names)
    range_difference, range_where = tidecv_difference(ours, range_figures, ("ap50", *MAIN_ERRORS))
    counts = ("equal" if ours.counts == figures["counts"]
              else f"DIFFER: detviz {ours.counts}, tidecv {figures['counts']}")
    lines.append(f"TIDE agreement: largest |detviz - tidecv| {difference:.2e} AP points ({where}); against "
                 f"evaluate_range's IoU .5 run {range_difference:.2e} ({range_where}); error counts {counts}")
    lines.append(f"TIDE: AP50 {ours.ap50:.2f}; dAP " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                              {**ours.errors, **ours.special}.items()))
    detection_types = {k: ours.detection_types.count(k) for k in ("TP", *MAIN_ERRORS[:-1], BEYOND_MAX_DETS)}
    gt_types = list(ours.gt_types.values())
    gt_types = {k: gt_types.count(k) for k in ("Found", "Miss", "Cls", "Loc", "Crowd")}
    lines.append(f"TIDE types: detections {detection_types} ({sum(ours.detection_ignored)} in crowd regions); "
                 f"gts {gt_types}")
    del ours, figures, range_figures

    parts["match_detections (all detections)"], records = table.time(
        coco_ref, "detviz: match_detections(coco, results)", lambda: match_detections(coco, results),
        t_loadres + steps["evaluate"], note="ratio vs loadRes + evaluate()")
    ours_tp = records_true_positives(records)
    lines.append(f"COCO matching agreement: true positives at the ten IoU thresholds "
                 f"{'equal' if ours_tp == reference_tp else 'DIFFER'} (at .50 detviz {ours_tp[0]}, COCOeval "
                 f"{reference_tp[0]}; at .95 {ours_tp[-1]}, {reference_tp[-1]})")
    parts["lrp_from_records"], _ = table.time("confusion matrix, LRP (no reference here)",
                                              "detviz: lrp_from_records (the matching above)",
                                              lambda: lrp_from_records(coco, results, records))
    del records
    reference_steps = t_loadres + steps["evaluate"] + steps["accumulate"] + steps["summarize"]
    parts["coco_metrics"], metrics = table.time(coco_ref, "detviz: coco_metrics(coco, results)",
                                                lambda: coco_metrics(coco, results), reference_steps,
                                                note="ratio vs loadRes + the three steps")
    parts["precision_recall_curves"] = timed(lambda: precision_recall_curves(metrics))
    stats_equal = [metrics[name] for name in STAT_NAMES] == reference_stats
    precision_equal = np.array_equal(metrics["precision"], reference_precision)
    lines.append(f"COCO metrics: mAP {metrics['mAP']:.4f}, AP50 {metrics['AP50']:.4f}; the twelve stats "
                 f"{'equal' if stats_equal else 'DIFFER'} to COCOeval's, its precision array [T, R, K, A, M] "
                 f"{'equal' if precision_equal else 'DIFFERS'} entry for entry")
    del metrics, reference_precision

    other = "confusion matrix, LRP (no reference here)"
    for mode in ("one_to_one", "many_to_one"):
        table.time(other, f"detviz: confusion_matrix(mode={mode!r})",
                   lambda: confusion_matrix(coco, results, mode=mode))
    table.time(other, "detviz: optimal_lrp(coco, results)", lambda: optimal_lrp(coco, results))

    # ---- the analyze command without images
    command = "python -m detviz analyze --results R --data D (no images/)"
    t_analyze, analysis = table.time(command, "detviz: analyze_results(coco, results)",
                                     lambda: analyze_results(coco, results))
    t_summary, numbers = table.time(command, "detviz: summary(analysis)", lambda: summary(analysis))
    out = folder / "report"
    out.mkdir()

    def json_files():
        (out / "summary.json").write_text(json.dumps(numbers, indent=1, allow_nan=False) + "\n")
        (out / "results.json").write_text(json.dumps(results) + "\n")
    t_json_out, _ = table.time(command, "summary.json + results.json (json.dumps)", json_files)
    t_rows, rows = table.time(command, "detviz: object_rows(analysis)", lambda: object_rows(analysis),
                              note=f"{len(analysis.records.detections)} + {len(analysis.records.gts)} rows")
    t_csv, _ = table.time(command, "objects.csv (write_object_rows, as the command)",
                          lambda: write_object_rows(out / "objects.csv", rows))
    del rows
    t_report, _ = table.time(command, "detviz: write_report(analysis, out), dataset=None",
                             lambda: write_report(analysis, out))
    figure_sizes = ", ".join(f"{p.stem} {p.stat().st_size / 2 ** 10:.0f} KiB" for p in sorted(out.glob("*.png")))
    lines.append(f"report: {figure_sizes}")
    in_process = t_analyze + t_summary + t_json_out + t_rows + t_csv + t_report
    table.rows.append([command, "  the six rows above", in_process, None, None, ""])
    del analysis, numbers
    argv = [sys.executable, "-m", "detviz", "analyze", "--results", str(results_path), "--data", str(data_dir),
            "--out", str(folder / "analyze_out")]
    t_command, (returncode, child_peak) = table.time(
        command, "the command itself, in a subprocess", lambda: run_watched(argv, folder / "analyze_log"),
        in_process, note="ratio vs the six rows")
    table.rows[-1][-2] = child_peak  # the command's own peak, not this process'

    stdout, stderr = (folder / "analyze_log.out").read_text(), (folder / "analyze_log.err").read_text()
    if returncode != 0:
        lines.append(f"the command failed ({returncode}): {stderr.strip()[-2000:]}")
    else:
        lines.append(f"the command's last line: {stdout.strip().splitlines()[-1][:150]} ...")

    # ---- the parts of analyze_results not timed above
    progress("the remaining parts of analyze_results ...")
    release()
    kept = []
    parts[f"select score >= {DEFAULT_SCORE_THRESH}"] = timed(
        lambda: kept.extend(r for r in results if r["score"] >= DEFAULT_SCORE_THRESH))
    parts[f"confusion_matrix (one_to_one, score >= {DEFAULT_SCORE_THRESH})"] = timed(
        lambda: confusion_matrix(coco, kept, score_threshold=-1.0))  # as analyze_results: kept is already cut
    kept_records = []
    parts[f"match_detections (the {len(kept)} with score >= {DEFAULT_SCORE_THRESH})"] = timed(
        lambda: kept_records.append(match_detections(coco, kept)))
    parts["why_missed"] = timed(lambda: why_missed(kept_records[0], None))

    table.print()
    print()
    for line in lines:
        print(line)
    total = sum(parts.values())
    print("\nwhere the time goes in analyze_results: its parts, each called alone "
          "(the first four are the table's rows)")
    for name, seconds in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"  {name:60s} {seconds:9.2f} s {100 * seconds / total:5.1f} %  {'#' * round(40 * seconds / total)}")
    print(f"  {'sum of the parts':60s} {total:9.2f} s  (analyze_results in one call: {t_analyze:.2f} s)")
    name, seconds = max(parts.items(), key=lambda item: item[1])
    print(f"  the largest part: {name}, {100 * seconds / total:.0f} % of the sum")


if __name__ == "__main__":
    main()
