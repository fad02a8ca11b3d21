"""COCO's twelve box metrics from detviz's own matching, equal to pycocotools' COCOeval.

``coco_metrics`` returns what :func:`detviz.evaluation.evaluate_coco` returns (the twelve
``STAT_NAMES``, AP per class, the printed table) without building COCOeval's per-image dicts:
on 5000 images with 100 detections each, pycocotools' ``evaluate`` + ``accumulate`` take about a
minute; these steps take a few seconds. Its tests compare every stat, the whole precision array and
the table with pycocotools' on the same inputs.

The three steps of ``COCOeval`` (iouType "bbox", default ``Params``), column by column:

1. *evaluate*: match every image-category at the ten IoU thresholds once per area range (all,
   small, medium, large) with :mod:`detviz.evaluation.matching`'s greedy loop. Only the area
   range changes between the four: a gt whose ``area`` lies outside it is ignored (as are crowds),
   and so is an unmatched detection whose ``w * h`` lies outside it.
2. *accumulate*: for each category, area range and detection limit (1, 10, 100 per image), take
   the first ``limit`` detections of each image-category by score and sort them all by score,
   stably (ties in ascending image id, then by rank, the order COCOeval concatenates them in);
   count true and false positives cumulatively, skipping ignored detections; recall is true
   positives over the category's regular gts; precision is made non-increasing from the right and
   read at the 101 recall points 0, 0.01, ..., 1 (0 beyond the highest recall reached). -1 marks
   "no regular gt": such entries are left out of every mean.
3. *summarize*: each stat is the mean of its slice of the precision or recall array.

One deliberate difference: COCOeval stores the id of a detection's matched annotation and reads
id 0 as "unmatched", so a detection that matches an annotation whose id is 0 scores as a false
positive there. Here it is a true positive (ids from 1, as COCO's own files use, agree).
"""
from __future__ import annotations

import math

import numpy as np

from detviz.evaluation.cocotable import UNMATCHED, CocoTable, read_coco_table
from detviz.evaluation.matching import IOU_THRESHOLDS, MAX_DETS, match_table

__all__ = ["AREA_RANGES", "MAX_DETS_LIMITS", "RECALL_THRESHOLDS", "coco_metrics"]

AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
               "large": (96.0 ** 2, 1e10)}  # COCOeval's areaRng, both ends inclusive
MAX_DETS_LIMITS = (1, 10, MAX_DETS)  # COCOeval's maxDets
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCOeval's recThrs
# (stat name, AP or AR, IoU threshold or None for the mean over all ten, area range, detection limit)
STATS = (("mAP", True, None, "all", 100), ("AP50", True, 0.5, "all", 100), ("AP75", True, 0.75, "all", 100),
         ("AP_small", True, None, "small", 100), ("AP_medium", True, None, "medium", 100),
         ("AP_large", True, None, "large", 100), ("AR1", False, None, "all", 1), ("AR10", False, None, "all", 10),
         ("AR100", False, None, "all", 100), ("AR_small", False, None, "small", 100),
         ("AR_medium", False, None, "medium", 100), ("AR_large", False, None, "large", 100))
NO_GROUND_TRUTH = -1.0


def _outcomes(table: CocoTable, area: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 1 for one area range: ``(matched [N, T] bool, ignored [N, T] bool, regular gts [M] bool)``."""
    gts = table.gts
    gts = gts._replace(ignored=gts.crowd | (gts.area < area[0]) | (gts.area > area[1]))
    det_match, _ = match_table(table, gts)  # [N, T] gt index or UNMATCHED
    matched = det_match != UNMATCHED
    det_area = table.dets.xywh[:, 2] * table.dets.xywh[:, 3]  # what loadRes stores as a bbox result's area
    outside = (det_area < area[0]) | (det_area > area[1])
    on_ignored = np.append(gts.ignored, False)[det_match]  # UNMATCHED (-1) reads the appended False
    return matched, np.where(matched, on_ignored, outside[:, None]), ~gts.ignored


def _sorted_by_category(table: CocoTable, category_of: np.ndarray,
                        num_categories: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluated detections grouped by category k, each group by score descending, ties by ascending
    image id, then rank. Returns ``(order [E], bounds [K + 1])``: group k is ``order[bounds[k]:bounds[k + 1]]``."""
    ids = table.ids[0]
    image_pos = np.empty(len(ids), dtype=np.int64)
    image_pos[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
    dets = table.dets
    order = np.nonzero(table.evaluated)[0]
    order = order[np.lexsort((table.rank[order], image_pos[dets.image[order]], -dets.score[order]))]
    order = order[np.argsort(category_of[dets.category[order]], kind="stable")]
    bounds = np.searchsorted(category_of[dets.category[order]], np.arange(num_categories + 1))
    return order, bounds


def _precision_at_recalls(matched: np.ndarray, ignored: np.ndarray, num_regular: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 2 for one category, area and limit. matched, ignored [T, D] in score order ->
    (precision [T, R] at RECALL_THRESHOLDS, final recall [T])."""
    tp_sum = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)  # [T, D]
    fp_sum = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    num = tp_sum.shape[1]
    if num == 0:
        return np.zeros((len(tp_sum), len(RECALL_THRESHOLDS))), np.zeros(len(tp_sum))
    recall = tp_sum / num_regular
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))  # COCOeval's order of operations, bit for bit
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # best precision at this recall or more
    out = np.zeros((len(tp_sum), len(RECALL_THRESHOLDS)))
    for t in range(len(tp_sum)):
        at = np.searchsorted(recall[t], RECALL_THRESHOLDS, side="left")  # [R] first detection reaching it
        reached = at < num
        out[t, reached] = precision[t, at[reached]]
    return out, recall[:, -1]


def _accumulate(table: CocoTable) -> tuple[np.ndarray, np.ndarray, list]:
    """Steps 1 and 2: ``(precision [T, R, K, A, M], recall [T, K, A, M], category ids ascending)``."""
    category_ids = sorted(table.ids[1])
    category_of = np.empty(len(category_ids), dtype=np.int64)  # category index (COCO order) -> k
    category_of[sorted(range(len(category_ids)), key=table.ids[1].__getitem__)] = np.arange(len(category_ids))
    shape = (len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(category_ids), len(AREA_RANGES), len(MAX_DETS_LIMITS))
    precision = np.full(shape, NO_GROUND_TRUTH)
    recall = np.full((shape[0], *shape[2:]), NO_GROUND_TRUTH)
    order, bounds = _sorted_by_category(table, category_of, len(category_ids))
    for a, area in enumerate(AREA_RANGES.values()):
        matched, ignored, regular = _outcomes(table, area)
        num_regular = np.bincount(category_of[table.gts.category[regular]], minlength=len(category_ids))  # [K]
        for k in np.nonzero(num_regular)[0]:
            group = order[bounds[k]:bounds[k + 1]]
            for m, limit in enumerate(MAX_DETS_LIMITS):
                kept = group[table.rank[group] < limit]
                precision[:, :, k, a, m], recall[:, k, a, m] = _precision_at_recalls(
                    matched[kept].T, ignored[kept].T, int(num_regular[k]))
    return precision, recall, category_ids


def _stat(precision: np.ndarray, recall: np.ndarray, ap: bool, iou, area: str, limit: int) -> float:
    """Step 3: the mean of the entries > -1 of one slice, -1 when there are none."""
    a, m = list(AREA_RANGES).index(area), MAX_DETS_LIMITS.index(limit)
    values = precision[..., a, m] if ap else recall[..., a, m]  # [T, R, K] or [T, K]
    if iou is not None:
        values = values[[i for i, t in enumerate(IOU_THRESHOLDS) if math.isclose(t, iou)]]
    values = values[values > NO_GROUND_TRUTH]
    return float(np.mean(values)) if values.size else NO_GROUND_TRUTH


def _table_line(name_ap: bool, iou, area: str, limit: int, value: float) -> str:
    """One line of COCOeval.summarize()'s printed table."""
    title, kind = ("Average Precision", "(AP)") if name_ap else ("Average Recall", "(AR)")
    ious = f"{IOU_THRESHOLDS[0]:0.2f}:{IOU_THRESHOLDS[-1]:0.2f}" if iou is None else f"{iou:0.2f}"
    return f" {title:<18} {kind} @[ IoU={ious:<9} | area={area:>6s} | maxDets={limit:>3d} ] = {value:0.3f}"


def coco_metrics(coco_gt, results) -> dict:
    """pycocotools' box metrics of ``results`` against ``coco_gt``, computed on detviz's matching.

    Args:
        coco_gt: ``pycocotools.coco.COCO`` or the path of a COCO json (not modified).
        results: COCO results list (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] pixels,
            ``score``; not modified). May be empty.

    Returns:
        ``{name: float for name in STAT_NAMES}`` equal to ``COCOeval.stats`` (-1 where ``coco_gt``
        has no regular gt in that area range), ``"per_class"``: {category name: AP} (NaN without
        ground truth), ``"summary_text"``: COCOeval's printed table, ``"precision"`` [T, R, K, A, M]
        and ``"recall"`` [T, K, A, M] as in ``COCOeval.eval``, ``"category_ids"`` (K, ascending) and
        ``"category_names"``. Unlike ``evaluate_coco``, empty results are scored like any others
        (0 where there are gts, -1 where there are none).

    Raises:
        ValueError: naming the entry: an unknown image or category, a score that is not finite, a
            bbox not 4 finite numbers or of negative width or height; a malformed annotation.
        TypeError: ``coco_gt`` or ``results`` of the wrong type.
    """
    table = read_coco_table(coco_gt, results, MAX_DETS)
    precision, recall, category_ids = _accumulate(table)
    names = [str(table.coco.cats[c].get("name", c)) for c in category_ids]
    metrics = {name: _stat(precision, recall, *spec) for name, *spec in STATS}
    per_class = {}
    for k, name in enumerate(names):
        values = precision[:, :, k, 0, -1]  # [T, R], area "all", 100 detections
        values = values[values > NO_GROUND_TRUTH]
        per_class[name] = float(values.mean()) if values.size else math.nan
    text = "\n".join(_table_line(*spec, metrics[name]) for name, *spec in STATS) + "\n"
    return {**metrics, "per_class": per_class, "summary_text": text, "precision": precision, "recall": recall,
            "category_ids": category_ids, "category_names": names}
