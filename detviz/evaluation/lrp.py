"""Localisation-Recall-Precision error and optimal LRP (Oksuz, Cam, Akbas, Kalkan, "Localization
Recall Precision (LRP): A New Performance Metric for Object Detection", ECCV 2018).

For one class, IoU threshold tau and score threshold s, the detections with ``score >= s`` are
matched to the ground truth as pycocotools does, one image at a time: detections by descending
score, each takes the unmatched ordinary gt of its class with the highest IoU ``>= tau`` (a true
positive, TP); one that finds none but covers a crowd box (intersection / detection area
``>= tau``) is ignored, neither TP nor FP; the rest are false positives (FP); ordinary gts left
unmatched are false negatives (FN); crowd gts are never FNs. Then

    LRP = ( sum over TPs of (1 - IoU) / (1 - tau) + N_FP + N_FN ) / Z,   Z = N_TP + N_FP + N_FN

the paper's ``1/Z (w_IoU LRP_IoU + w_FP LRP_FP + w_FN LRP_FN)`` with ``w_IoU = N_TP / (1 - tau)``,
``w_FP = N_TP + N_FP`` (detections), ``w_FN = N_TP + N_FN`` (ground truths), and components

    LRP_IoU (loc) = mean over TPs of (1 - IoU)     (1 - the TPs' mean IoU; NaN without TPs)
    LRP_FP  (fp)  = N_FP / (N_TP + N_FP)           (1 - precision; NaN without detections)
    LRP_FN  (fn)  = N_FN / (N_TP + N_FN)           (1 - recall)

Each TP, FP and FN costs at most 1, so LRP lies in [0, 1]: 0 for perfect boxes with no FP and no
FN, 1 when nothing is found. This Z normalisation is the one in the ECCV 2018 paper's code
(cancam/LRP, ``cocoevalLRP.accumulate``: it scales by ``max(N_TP + N_FP, N_G)`` and then divides
that back out) and in the 2021 TPAMI follow-up, "One Metric to Measure them All" (code:
kemaloksuz/LRP-Error), which keeps the same formula and components.

Optimal LRP of a class: ``oLRP = min over s of LRP``, taken over every distinct detection score
of the class and over "keep nothing" (LRP 1 when the class has gts); s* is the LRP-optimal
threshold and the components are reported there. Ties (within ``TIE_TOLERANCE``) go to the
highest threshold, the fewest detections, as the TPAMI code's ``argmin`` over detections sorted
by descending score does; so a class where nothing beats LRP 1 reports the empty configuration:
oLRP 1, loc NaN, fp NaN, fn 1, threshold NaN (the TPAMI code's values for a class without a TP).
The ECCV 2018 code instead scans the fixed grid s = 0.00, 0.01, ..., 1.00 and keeps the lowest
tied threshold; the TPAMI code scans every detection, including splits inside a group of equal
scores, which no threshold can make. moLRP (and moLRP_loc/fp/fn) = mean over the classes that have
ordinary gts (NaN components skipped, as both codes' ``nanmean``); a class without gts gets NaN
everywhere and is left out, as both codes do. As pycocotools, only the ``max_detections``
highest-scoring detections of each image and class are evaluated (default 100; None: all).
"""
from __future__ import annotations

import math
import numbers
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from detviz.evaluation.confusion import (ImageBoxes, category_order, check_unit_interval, crowd_overlap, gather_images,
                                         load_ground_truth, pairwise_iou)
from detviz.evaluation.matching import coco_box_iou

__all__ = ["ClassLRP", "LRPResult", "lrp_error", "match_image_class", "lrp_curve", "optimal_lrp", "lrp_from_records"]

IOU_THRESHOLD = 0.5  # tau, the paper's default
MAX_DETECTIONS = 100  # per image and class, pycocotools' maxDets[-1]
TIE_TOLERANCE = 1e-12  # LRP values closer than this are ties (float sums of equal fractions differ in the last bit)
NOT_A_TP = math.nan  # tp_iou value of a false positive


def lrp_error(tp_ious, num_fp: int, num_fn: int, *, iou_threshold: float = IOU_THRESHOLD) -> float:
    """LRP of one matched configuration: ``(sum (1 - IoU) / (1 - tau) + N_FP + N_FN) / (N_TP + N_FP + N_FN)``.

    Args:
        tp_ious: the IoU of each true positive, each in ``[iou_threshold, 1]`` (length N_TP).
        num_fp, num_fn: counts of false positives and false negatives, ints >= 0.
        iou_threshold: tau in (0, 1).
    Returns:
        LRP in [0, 1]; NaN when there is nothing to score (N_TP = N_FP = N_FN = 0).
    """
    tau = check_unit_interval(iou_threshold, "iou_threshold", high_open=True)
    ious = np.asarray(tp_ious, dtype=np.float64).reshape(-1)  # [N_TP]
    if ious.size and not ((ious >= tau) & (ious <= 1)).all():
        raise ValueError(f"tp_ious must lie in [iou_threshold, 1] = [{tau}, 1] (a TP needs IoU >= tau), "
                         f"got {ious.tolist()}")
    for name, value in (("num_fp", num_fp), ("num_fn", num_fn)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    total = ious.size + num_fp + num_fn
    if total == 0:
        return math.nan
    return float(((1 - ious).sum() / (1 - tau) + num_fp + num_fn) / total)


def match_image_class(gt_boxes: np.ndarray, gt_crowd: np.ndarray, det_boxes: np.ndarray,
                     iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' greedy matching of one image and class (``COCOeval.evaluateImg``, area "all").

    Args:
        gt_boxes (np.ndarray[M, 4]): xyxy. gt_crowd (np.ndarray[M] bool).
        det_boxes (np.ndarray[P, 4]): xyxy, sorted by descending score (the matching order).
        iou_threshold: tau; a TP needs ``IoU >= tau``, a crowd hit ``intersection / det area >= tau``.
    Returns:
        ``(tp_iou [P] float64, ignored [P] bool)``: the IoU of each true positive, NaN for the
        others; ``ignored`` marks detections that matched only a crowd box.
    """
    iou = pairwise_iou(det_boxes, gt_boxes[~gt_crowd])  # [P, M']
    on_crowd = (crowd_overlap(det_boxes, gt_boxes[gt_crowd]) >= iou_threshold).any(axis=1)  # [P]
    taken = np.zeros(iou.shape[1], dtype=bool)  # [M']
    tp_iou = np.full(det_boxes.shape[0], NOT_A_TP)
    for d in range(det_boxes.shape[0]):
        candidates = np.where(taken, -1.0, iou[d])  # a matched ordinary gt is gone
        if candidates.size and candidates.max() >= iou_threshold:
            best = int(candidates.argmax())
            taken[best] = True
            tp_iou[d] = candidates[best]
    ignored = np.isnan(tp_iou) & on_crowd
    return tp_iou, ignored


def _class_outcomes(images: dict[int, ImageBoxes], label: int, iou_threshold: float,
                    max_detections: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(scores [D], tp_iou [D], num_gts)`` of one class over all images: the counted detections
    (ignored ones dropped) by descending score, NaN tp_iou for FPs, and the ordinary gt count."""
    scores, tp_ious, num_gts = [np.zeros(0)], [np.zeros(0)], 0
    for image in images.values():
        gt_mask = image.gt_labels == label
        num_gts += int((gt_mask & ~image.gt_crowd).sum())
        det_index = np.flatnonzero(image.det_labels == label)
        if det_index.size == 0:  # nothing to match: its gts are all false negatives
            continue
        det_index = det_index[np.argsort(-image.det_scores[det_index], kind="stable")][:max_detections]  # [P]
        tp_iou, ignored = match_image_class(image.gt_boxes[gt_mask], image.gt_crowd[gt_mask],
                                           image.det_boxes[det_index], iou_threshold)
        scores.append(image.det_scores[det_index][~ignored])
        tp_ious.append(tp_iou[~ignored])
    scores, tp_ious = np.concatenate(scores), np.concatenate(tp_ious)  # [D] each
    order = np.argsort(-scores, kind="stable")
    return scores[order], tp_ious[order], num_gts


def lrp_curve(scores: np.ndarray, tp_iou: np.ndarray, num_gts: int,
              iou_threshold: float = IOU_THRESHOLD) -> dict[str, np.ndarray]:
    """LRP and its counts at every distinct score threshold of one class.

    Args:
        scores (np.ndarray[D]): counted detections, sorted by descending score.
        tp_iou (np.ndarray[D]): each detection's TP IoU, NaN for a false positive.
        num_gts: ordinary ground truths of the class. iou_threshold: tau.
    Returns:
        dict of arrays [S], S = number of distinct scores, thresholds descending:
        ``threshold``, ``lrp``, ``num_tp``, ``num_fp``, ``num_fn`` (int64) and ``loc_sum``
        (sum of 1 - IoU over the TPs kept at that threshold).
    """
    if scores.shape[0] == 0:
        empty_int = np.zeros(0, dtype=np.int64)
        return {"threshold": np.zeros(0), "lrp": np.zeros(0), "num_tp": empty_int, "num_fp": empty_int,
                "num_fn": empty_int, "loc_sum": np.zeros(0)}
    is_tp = ~np.isnan(tp_iou)  # [D]
    num_tp = np.cumsum(is_tp)  # [D]: kept TPs when the threshold is scores[i]
    num_fp = np.cumsum(~is_tp)
    loc_sum = np.cumsum(np.where(is_tp, 1 - np.nan_to_num(tp_iou), 0.0))
    last = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))  # last detection of each score group
    num_tp, num_fp, loc_sum = num_tp[last], num_fp[last], loc_sum[last]  # [S]
    num_fn = num_gts - num_tp
    lrp = (loc_sum / (1 - iou_threshold) + num_fp + num_fn) / (num_tp + num_fp + num_fn)  # Z >= 1 here
    return {"threshold": scores[last], "lrp": lrp, "num_tp": num_tp.astype(np.int64),
            "num_fp": num_fp.astype(np.int64), "num_fn": num_fn.astype(np.int64), "loc_sum": loc_sum}


@dataclass(frozen=True, eq=False)
class ClassLRP:
    """Optimal LRP of one class.

    Attributes:
        name, category_id: the class. num_gts: its ordinary (non-crowd) ground truths.
        olrp: min LRP over thresholds; NaN when num_gts is 0.
        loc, fp, fn: LRP_IoU = mean(1 - IoU) of the TPs, 1 - precision, 1 - recall at s* (NaN where undefined).
        threshold: s*, the LRP-optimal score threshold (keep ``score >= s*``); NaN: keep nothing.
        num_tp, num_fp, num_fn: counts at s*.
        curve: ``lrp_curve``'s arrays over all distinct scores (thresholds descending), for plots.

    A class without ordinary gts is not evaluated: olrp, loc, fp, fn and threshold are NaN and the
    counts 0, while ``curve`` still lists its detections (LRP 1 at every threshold: all FPs).
    """
    name: str
    category_id: int
    num_gts: int
    olrp: float
    loc: float
    fp: float
    fn: float
    threshold: float
    num_tp: int
    num_fp: int
    num_fn: int
    curve: dict


@dataclass(frozen=True, eq=False)
class LRPResult:
    """``per_class``: {category name: ClassLRP} in category id order; ``molrp`` and its components:
    means over the classes with ground truth (NaN values skipped); the settings used."""
    per_class: dict
    molrp: float
    molrp_loc: float
    molrp_fp: float
    molrp_fn: float
    iou_threshold: float
    max_detections: int | None


def _optimum(curve: dict[str, np.ndarray], num_gts: int) -> dict:
    """The LRP-optimal point of ``curve``, "keep nothing" (LRP 1) included; ties go to the highest threshold."""
    empty = {"olrp": 1.0, "loc": math.nan, "fp": math.nan, "fn": 1.0, "threshold": math.nan,
             "num_tp": 0, "num_fp": 0, "num_fn": num_gts}
    lrp = np.concatenate([[1.0], curve["lrp"]])  # [S + 1]: index 0 = keep nothing
    best = int(np.flatnonzero(lrp <= lrp.min() + TIE_TOLERANCE)[0])  # the highest threshold among ties
    if best == 0:
        return empty
    i = best - 1
    num_tp, num_fp, num_fn = (int(curve[key][i]) for key in ("num_tp", "num_fp", "num_fn"))
    return {"olrp": float(curve["lrp"][i]), "loc": float(curve["loc_sum"][i] / num_tp) if num_tp else math.nan,
            "fp": num_fp / (num_tp + num_fp), "fn": num_fn / num_gts, "threshold": float(curve["threshold"][i]),
            "num_tp": num_tp, "num_fp": num_fp, "num_fn": num_fn}


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def optimal_lrp(coco_gt, results: list, *, iou_threshold: float = IOU_THRESHOLD,
                max_detections: int | None = MAX_DETECTIONS) -> LRPResult:
    """oLRP per class and moLRP of a COCO results list (definitions in the module docstring).

    Args:
        coco_gt: ``pycocotools.coco.COCO`` or a path to the COCO json.
        results: COCO results list (dicts ``image_id``, ``category_id``, ``bbox`` = [x, y, w, h]
            pixels, ``score``); every image and category must exist in ``coco_gt``.
        iou_threshold: tau in (0, 1), default 0.5.
        max_detections: detections evaluated per image and class (highest scores), or None for all.
    Returns:
        ``LRPResult``; ``per_class`` has every category of ``coco_gt``.
    Raises:
        ValueError / TypeError naming the bad argument, results entry or annotation.
    """
    tau = check_unit_interval(iou_threshold, "iou_threshold", high_open=True)
    if max_detections is not None and (not isinstance(max_detections, numbers.Integral)
                                       or isinstance(max_detections, bool) or max_detections < 1):
        raise ValueError(f"max_detections must be an int >= 1 or None, got {max_detections!r}")
    coco = load_ground_truth(coco_gt)
    category_ids, names = category_order(coco)
    images = gather_images(coco, results, category_ids)
    per_class = {}
    for label, (category_id, name) in enumerate(zip(category_ids, names)):
        scores, tp_iou, num_gts = _class_outcomes(images, label, tau, max_detections)
        curve = lrp_curve(scores, tp_iou, num_gts, tau)
        if num_gts:
            point = _optimum(curve, num_gts)
        else:  # nothing to find: LRP is 1 at every threshold with a detection, undefined without
            point = {"olrp": math.nan, "loc": math.nan, "fp": math.nan, "fn": math.nan, "threshold": math.nan,
                     "num_tp": 0, "num_fp": 0, "num_fn": 0}
        per_class[name] = ClassLRP(name=name, category_id=category_id, num_gts=num_gts, curve=curve, **point)
    evaluated = [c for c in per_class.values() if c.num_gts]
    return LRPResult(per_class=per_class, molrp=_nanmean([c.olrp for c in evaluated]),
                     molrp_loc=_nanmean([c.loc for c in evaluated]), molrp_fp=_nanmean([c.fp for c in evaluated]),
                     molrp_fn=_nanmean([c.fn for c in evaluated]), iou_threshold=tau, max_detections=max_detections)


def lrp_from_records(coco_gt, results: list, records) -> LRPResult:
    """:func:`optimal_lrp` at IoU 0.5 from COCO's matching already done
    (:func:`detviz.evaluation.matching.match_detections` of the same ``results``), without matching again.

    The two matchings are one rule (greedy by score, 100 detections per image and class, crowd
    regions ignored); they can differ only where two gts tie exactly in IoU with one detection
    (COCOeval takes the later gt, :func:`match_image_class` the first).
    """
    coco = load_ground_truth(coco_gt)
    t = records.threshold_index(IOU_THRESHOLD)
    category_ids, names = category_order(coco)
    kept = [d for d in records.detections if d.evaluated and not d.ignored[t]]
    tps = [d for d in kept if d.matched[t] is not None]
    det_xywh = np.array([results[d.index]["bbox"] for d in tps], dtype=np.float64).reshape(-1, 4)
    gt_xywh = np.array([coco.anns[d.matched[t]]["bbox"] for d in tps], dtype=np.float64).reshape(-1, 4)
    tp_iou = dict(zip((d.index for d in tps), coco_box_iou(det_xywh, gt_xywh, False)))  # [T] pairs, not [T, T]
    by_class, gts_of = defaultdict(list), Counter(g.category_id for g in records.gts if not g.ignored)
    for d in kept:
        by_class[d.category_id].append(d)
    per_class = {}
    for category_id, name in zip(category_ids, names):
        mine = sorted(by_class[category_id], key=lambda d: -d.score)  # stable: ties keep the results order
        scores = np.array([d.score for d in mine], dtype=np.float64)
        ious = np.array([tp_iou.get(d.index, math.nan) for d in mine], dtype=np.float64)
        num_gts = gts_of[category_id]
        curve = lrp_curve(scores, ious, num_gts)
        point = _optimum(curve, num_gts) if num_gts else {
            "olrp": math.nan, "loc": math.nan, "fp": math.nan, "fn": math.nan, "threshold": math.nan,
            "num_tp": 0, "num_fp": 0, "num_fn": 0}
        per_class[name] = ClassLRP(name=name, category_id=category_id, num_gts=num_gts, curve=curve, **point)
    evaluated = [c for c in per_class.values() if c.num_gts]
    return LRPResult(per_class=per_class, molrp=_nanmean([c.olrp for c in evaluated]),
                     molrp_loc=_nanmean([c.loc for c in evaluated]), molrp_fp=_nanmean([c.fp for c in evaluated]),
                     molrp_fn=_nanmean([c.fn for c in evaluated]), iou_threshold=IOU_THRESHOLD,
                     max_detections=records.max_dets)
