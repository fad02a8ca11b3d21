"""Detection confusion matrix with a background row and column, from a COCO ground truth and results list.

Orientation (detviz): **rows = ground truth, columns = prediction**, class order = COCO
categories sorted by id, and index C (the last row and column) is ``background``:

* ``matrix[g, p]`` (g, p < C): a ground truth of class g matched by a detection of class p
  (the diagonal is the true positives);
* ``matrix[g, C]``: a ground truth of class g that was missed (false negative);
* ``matrix[C, p]``: a detection of class p that matched no ground truth (background false positive);
* ``matrix[C, C]`` is always 0: detection has no countable true negatives.

Ultralytics stores the transpose (``matrix[pred, gt]``, "Predicted" on the y axis); mmdetection
uses this orientation.

Two matching conventions, chosen with ``mode``. Both compare every ground truth with every
detection of any class (class-agnostic IoU from ``detviz.boxes.box_iou``), one image at a time:

* ``"one_to_one"`` (default): Ultralytics' ``ConfusionMatrix.process_batch``
  (ultralytics/utils/metrics.py). Keep detections with ``score > score_threshold`` (default
  0.25); candidate pairs are those with ``IoU >= iou_threshold``; sort them by IoU, descending,
  keep each detection's best pair (``np.unique`` on the detection column), sort again and keep
  each ground truth's best remaining pair (``np.unique`` on the gt column). Each surviving pair
  adds 1 to ``[gt class, det class]``, every other gt adds 1 to ``[gt class, background]`` and
  every other detection 1 to ``[background, det class]``. The two ``np.unique`` passes are not a
  greedy matching: with pairs (g0, d0) 0.9, (g0, d1) 0.8, (g1, d1) 0.6, d1 keeps (g0, d1), loses it
  to d0 and stays unmatched, so g1 is missed although a greedy matcher would pair it with d1.
  detviz reproduces Ultralytics here, except: the IoU test is ``>=`` (Ultralytics: ``> 0.45``, its
  class default), exact IoU ties go to the pair first in (gt index, detection index) order, and
  unmatched detections are always counted (Ultralytics before PR #18409 skipped them when an
  image had no match at all).
* ``"many_to_one"``: mmdetection's ``analyze_per_img_dets`` (tools/analysis_tools/
  confusion_matrix.py). Keep detections with ``score >= score_threshold`` (default 0.3). For each
  detection, every ground truth with ``IoU >= iou_threshold`` adds 1 to ``[gt class, det class]``;
  a detection that overlaps none adds 1 to ``[background, det class]``. A ground truth that no
  detection *of its own class* overlaps adds 1 to ``[gt class, background]`` (mmdetection counts
  only same-class hits as true positives, so a gt found only under a wrong class appears twice:
  once under that class and once under background). mmdetection can re-run NMS per class first
  (``--nms-iou-thr``, off by default); detviz never does.

Why the numbers differ: in many-to-one a detection counts once per ground truth it overlaps
(one box over two people adds 2), duplicates of one object all land on the diagonal, and rows
can sum to more than the number of objects; in one-to-one each detection and each ground truth
is used at most once, so a duplicate becomes a background false positive and a box over two
objects explains only one of them.

Crowd ground truths (``iscrowd=1``) are ignored regions in both modes: they are never missed
(no false negative) and never matched; a detection that matches no ordinary ground truth but
covers a crowd box of any class (the matrix matches across classes) with intersection /
detection area ``>= iou_threshold`` (pycocotools' crowd overlap, ``box_iof``) is counted nowhere
instead of as a background false positive. Neither reference has this rule: Ultralytics' COCO
converter drops crowd boxes and mmdetection 2.x's tool leaves them out (detections on them become
background false positives), while mmdetection 3.x's tool treats them as ordinary boxes.

This module also holds the input layer the evaluation modules share: reading the COCO ground
truth and checking a results list (``load_ground_truth``, ``category_order``, ``gather_images``).
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Hashable
from dataclasses import dataclass
from os import PathLike
from typing import NamedTuple

import numpy as np
import torch
from pycocotools.coco import COCO

from detviz._validate import is_finite_number
from detviz.boxes import box_iof, box_iou, box_xywh_to_xyxy

__all__ = ["BACKGROUND", "MODES", "DetectionConfusion", "ImageBoxes", "confusion_matrix", "one_to_one_pairs",
           "load_ground_truth", "category_order", "gather_images", "pairwise_iou", "crowd_overlap",
           "check_unit_interval"]

BACKGROUND = "background"  # name of the extra class, row C and column C
MODES = ("one_to_one", "many_to_one")
DEFAULT_SCORE_THRESHOLD = {"one_to_one": 0.25, "many_to_one": 0.3}  # Ultralytics' conf, mmdetection's --score-thr
DEFAULT_IOU_THRESHOLD = 0.5
RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


# ---------------------------------------------------------------- shared input layer

class ImageBoxes(NamedTuple):
    """One image's ground truth and detections, boxes in absolute-pixel xyxy (float64).

    gt_boxes [M, 4], gt_labels [M] int64 class index, gt_crowd [M] bool,
    det_boxes [P, 4], det_labels [P] int64 class index, det_scores [P] float64; detections in
    the order they appear in the results list.
    """
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_crowd: np.ndarray
    det_boxes: np.ndarray
    det_labels: np.ndarray
    det_scores: np.ndarray


def load_ground_truth(coco_gt) -> COCO:
    """Return ``coco_gt`` if it is a ``pycocotools.coco.COCO``, else load the json file it names (quietly)."""
    if isinstance(coco_gt, COCO):
        return coco_gt
    if not isinstance(coco_gt, (str, PathLike)):
        raise TypeError(f"coco_gt must be a pycocotools COCO or a path to a COCO json, got {type(coco_gt).__name__}")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(coco_gt))


def category_order(coco: COCO) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``(category ids, names)`` sorted by id: class index k is ``category_ids[k]``. Names must be unique."""
    category_ids = tuple(sorted(coco.cats))
    if not category_ids:
        raise ValueError("the ground truth must have at least one category in 'categories', got none")
    names = tuple(str(coco.cats[c].get("name", c)) for c in category_ids)
    if len(set(names)) != len(names):
        raise ValueError(f"category names must be unique to label classes, got {list(names)}")
    return category_ids, names


def _check_xywh(bbox, where: str) -> None:
    if isinstance(bbox, np.ndarray):
        bbox = bbox.tolist()
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
        raise ValueError(f"{where}: 'bbox' must be [x, y, w, h], four finite numbers, got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"{where}: 'bbox' must be [x, y, w, h] with w >= 0 and h >= 0, got {bbox!r}")


def _check_result(entry, index: int, image_ids: set, category_ids: set) -> None:
    where = f"results[{index}]"
    if not isinstance(entry, dict) or not set(RESULT_KEYS) <= entry.keys():
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"{where} must be a dict with keys {list(RESULT_KEYS)} (bbox as [x, y, w, h]), got {got}")
    if not isinstance(entry["image_id"], Hashable) or entry["image_id"] not in image_ids:
        raise ValueError(f"{where}: image_id {entry['image_id']!r} is not an image of the ground truth")
    if not isinstance(entry["category_id"], Hashable) or entry["category_id"] not in category_ids:
        raise ValueError(f"{where}: category_id {entry['category_id']!r} is not a ground-truth category "
                         f"(known ids: {sorted(category_ids)})")
    _check_xywh(entry["bbox"], where)
    if not is_finite_number(entry["score"]):
        raise ValueError(f"{where}: 'score' must be a finite number, got {entry['score']!r}")


def _xyxy(boxes_xywh: list) -> np.ndarray:
    xywh = torch.from_numpy(np.array(boxes_xywh, dtype=np.float64).reshape(-1, 4))  # [K, 4]
    return box_xywh_to_xyxy(xywh).numpy()


def gather_images(coco: COCO, results: list, category_ids: tuple[int, ...]) -> dict[int, ImageBoxes]:
    """Check ``results`` and group ground truth and detections by image.

    Args:
        coco: the ground truth. results: COCO results list, ``bbox`` = [x, y, w, h] pixels.
        category_ids: class order, from ``category_order``.
    Returns:
        ``{image_id: ImageBoxes}`` for every image of the ground truth, in ascending id order
        (images without boxes included). Inputs are not modified.
    Raises:
        ValueError naming the first bad results entry or ground-truth annotation.
    """
    if not isinstance(results, (list, tuple)):
        raise ValueError(f"results must be a list of COCO result dicts, got {type(results).__name__}")
    label_of = {c: k for k, c in enumerate(category_ids)}
    image_ids = set(coco.imgs)
    per_image_dets: dict = {image_id: [] for image_id in image_ids}
    for index, entry in enumerate(results):
        _check_result(entry, index, image_ids, set(label_of))
        per_image_dets[entry["image_id"]].append(entry)
    images = {}
    for image_id in sorted(image_ids):
        anns = coco.imgToAnns.get(image_id, [])
        for ann in anns:
            where = f"ground-truth annotation id {ann.get('id')!r} (image {image_id})"
            _check_xywh(ann.get("bbox"), where)
            if ann.get("category_id") not in label_of:
                raise ValueError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        dets = per_image_dets[image_id]
        images[image_id] = ImageBoxes(
            gt_boxes=_xyxy([a["bbox"] for a in anns]),
            gt_labels=np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64),
            gt_crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            det_boxes=_xyxy([d["bbox"] for d in dets]),
            det_labels=np.array([label_of[d["category_id"]] for d in dets], dtype=np.int64),
            det_scores=np.array([float(d["score"]) for d in dets], dtype=np.float64))
    return images


def pairwise_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """``detviz.boxes.box_iou`` on numpy xyxy [N, 4] and [M, 4] -> [N, M] float64; 0, not NaN, for two empty boxes."""
    if boxes1.shape[0] == 0 or boxes2.shape[0] == 0:  # skips box_iou's checks, the cost of most calls
        return np.zeros((boxes1.shape[0], boxes2.shape[0]))
    iou = box_iou(torch.from_numpy(boxes1), torch.from_numpy(boxes2)).numpy()
    return np.nan_to_num(iou, nan=0.0)


def crowd_overlap(det_boxes: np.ndarray, crowd_boxes: np.ndarray) -> np.ndarray:
    """Intersection over detection area [P, Mc]: pycocotools' IoU against a crowd box (``box_iof``)."""
    if det_boxes.shape[0] == 0 or crowd_boxes.shape[0] == 0:
        return np.zeros((det_boxes.shape[0], crowd_boxes.shape[0]))
    return box_iof(torch.from_numpy(det_boxes), torch.from_numpy(crowd_boxes)).numpy()


def check_unit_interval(value, name: str, *, low_open: bool = True, high_open: bool = False) -> float:
    """Return ``float(value)`` or raise naming the interval it must lie in."""
    low, high = "(" if low_open else "[", ")" if high_open else "]"
    if not is_finite_number(value):
        raise TypeError(f"{name} must be a number in {low}0, 1{high}, got {value!r}")
    if (value <= 0 if low_open else value < 0) or (value >= 1 if high_open else value > 1):
        raise ValueError(f"{name} must lie in {low}0, 1{high}, got {value}")
    return float(value)


# ---------------------------------------------------------------- result type

@dataclass(frozen=True, eq=False)
class DetectionConfusion:
    """A detection confusion matrix and the settings that produced it.

    Attributes:
        matrix (np.ndarray[C + 1, C + 1] int64): rows = ground-truth class, columns = predicted
            class, index C = background (see the module docstring).
        class_names: the C category names, sorted by category id. category_ids: their COCO ids.
        mode: "one_to_one" or "many_to_one". score_threshold, iou_threshold: the thresholds used.
    """
    matrix: np.ndarray
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    mode: str
    score_threshold: float
    iou_threshold: float

    @property
    def labels(self) -> tuple[str, ...]:
        """Row and column labels: the class names, then ``"background"``."""
        return (*self.class_names, BACKGROUND)

    def normalized(self, axis: int) -> np.ndarray:
        """The matrix divided by its row sums (``axis=1``) or column sums (``axis=0``).

        ``axis=1``: each ground-truth row sums to 1 (where each class's objects went, mmdetection's
        plot and Ultralytics' column-normalised plot of its transpose). ``axis=0``: each
        prediction column sums to 1 (what each predicted class really was).

        Returns:
            np.ndarray[C + 1, C + 1] float64; a row (column) with sum 0 is NaN: nothing to share out.
        """
        if axis not in (0, 1):
            raise ValueError(f"axis must be 1 (rows: ground truth) or 0 (columns: prediction), got {axis!r}")
        sums = self.matrix.sum(axis=axis, keepdims=True).astype(np.float64)  # [C+1, 1] or [1, C+1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sums > 0, self.matrix / sums, np.nan)


# ---------------------------------------------------------------- matching, one image at a time

def one_to_one_pairs(iou: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Ultralytics' matching: best pair per detection, then best remaining pair per ground truth.

    Args:
        iou (np.ndarray[M, P]): gt-by-detection IoU. iou_threshold: pairs need ``IoU >= iou_threshold``.
    Returns:
        ``(gt_index [K], det_index [K])`` int64, each gt and each detection at most once.
    """
    gt_index, det_index = np.nonzero(iou >= iou_threshold)  # [K'] each, row-major (gt, det) order
    order = np.argsort(-iou[gt_index, det_index], kind="stable")  # by IoU, descending
    gt_index, det_index = gt_index[order], det_index[order]
    _, first = np.unique(det_index, return_index=True)  # first = best pair of each detection
    gt_index, det_index = gt_index[first], det_index[first]
    order = np.argsort(-iou[gt_index, det_index], kind="stable")
    gt_index, det_index = gt_index[order], det_index[order]
    _, first = np.unique(gt_index, return_index=True)  # best remaining pair of each gt
    return gt_index[first], det_index[first]


def _on_crowd(image: ImageBoxes, det_keep: np.ndarray, iou_threshold: float) -> np.ndarray:
    """[P'] bool: the kept detections covering a crowd box by at least ``iou_threshold`` of their area."""
    crowd_boxes = image.gt_boxes[image.gt_crowd]  # [Mc, 4]
    if crowd_boxes.shape[0] == 0 or not det_keep.any():
        return np.zeros(int(det_keep.sum()), dtype=bool)
    return (crowd_overlap(image.det_boxes[det_keep], crowd_boxes) >= iou_threshold).any(axis=1)


def _one_to_one_counts(image: ImageBoxes, det_keep: np.ndarray, num_classes: int,
                       iou_threshold: float) -> np.ndarray:
    """This image's [C+1, C+1] counts under the one-to-one rule; ``det_keep`` [P] marks detections above the score."""
    counts = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    gt_labels = image.gt_labels[~image.gt_crowd]  # [M]
    det_labels = image.det_labels[det_keep]  # [P']
    iou = pairwise_iou(image.gt_boxes[~image.gt_crowd], image.det_boxes[det_keep])  # [M, P']
    gt_index, det_index = one_to_one_pairs(iou, iou_threshold)
    np.add.at(counts, (gt_labels[gt_index], det_labels[det_index]), 1)
    missed = np.ones(len(gt_labels), dtype=bool)
    missed[gt_index] = False
    np.add.at(counts, (gt_labels[missed], num_classes), 1)
    unmatched = np.ones(len(det_labels), dtype=bool)
    unmatched[det_index] = False
    unmatched &= ~_on_crowd(image, det_keep, iou_threshold)
    np.add.at(counts, (num_classes, det_labels[unmatched]), 1)
    return counts


def _many_to_one_counts(image: ImageBoxes, det_keep: np.ndarray, num_classes: int,
                        iou_threshold: float) -> np.ndarray:
    """This image's [C+1, C+1] counts under mmdetection's many-to-one rule."""
    counts = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    gt_labels = image.gt_labels[~image.gt_crowd]  # [M]
    det_labels = image.det_labels[det_keep]  # [P']
    hit = pairwise_iou(image.gt_boxes[~image.gt_crowd], image.det_boxes[det_keep]) >= iou_threshold  # [M, P']
    gt_index, det_index = np.nonzero(hit)  # every overlapping pair counts
    np.add.at(counts, (gt_labels[gt_index], det_labels[det_index]), 1)
    background = ~hit.any(axis=0) & ~_on_crowd(image, det_keep, iou_threshold)  # [P']
    np.add.at(counts, (num_classes, det_labels[background]), 1)
    found = (hit & (gt_labels[:, None] == det_labels[None, :])).any(axis=1)  # [M]: a same-class hit
    np.add.at(counts, (gt_labels[~found], num_classes), 1)
    return counts


# ---------------------------------------------------------------- entry point

def confusion_matrix(coco_gt, results: list, *, mode: str = "one_to_one", score_threshold: float | None = None,
                     iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> DetectionConfusion:
    """Count matches, misses and background detections over every image of ``coco_gt``.

    Args:
        coco_gt: ``pycocotools.coco.COCO`` or a path to the COCO json.
        results: COCO results list: dicts ``image_id``, ``category_id``, ``bbox`` = [x, y, w, h]
            pixels, ``score``; every image and category must exist in ``coco_gt``.
        mode: "one_to_one" (Ultralytics, default) or "many_to_one" (mmdetection); see the module docstring.
        score_threshold: detections kept have ``score > score_threshold`` (one_to_one, default 0.25)
            or ``score >= score_threshold`` (many_to_one, default 0.3), as the references compare.
        iou_threshold: a pair overlaps when ``IoU >= iou_threshold``, in (0, 1], default 0.5.
    Returns:
        ``DetectionConfusion`` with ``matrix`` int64 [C + 1, C + 1], rows = ground truth,
        columns = prediction, C = number of categories, last index = background.
    Raises:
        ValueError / TypeError naming the bad argument, results entry or annotation.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if score_threshold is None:
        score_threshold = DEFAULT_SCORE_THRESHOLD[mode]
    if not is_finite_number(score_threshold):
        raise TypeError(f"score_threshold must be a finite number or None, got {score_threshold!r}")
    iou_threshold = check_unit_interval(iou_threshold, "iou_threshold")
    coco = load_ground_truth(coco_gt)
    category_ids, names = category_order(coco)
    count_image = _one_to_one_counts if mode == "one_to_one" else _many_to_one_counts
    matrix = np.zeros((len(category_ids) + 1, len(category_ids) + 1), dtype=np.int64)
    for image in gather_images(coco, results, category_ids).values():
        scores = image.det_scores
        det_keep = scores > score_threshold if mode == "one_to_one" else scores >= score_threshold  # [P]
        matrix += count_image(image, det_keep, len(category_ids), iou_threshold)
    return DetectionConfusion(matrix=matrix, class_names=names, category_ids=category_ids, mode=mode,
                              score_threshold=float(score_threshold), iou_threshold=iou_threshold)
