"""Per-object records under COCO's matching rules: what COCOeval decided for every detection and gt.

``match_detections`` re-implements ``COCOeval.evaluateImg`` (iouType "bbox", default parameters, area
"all") and records each detection's and gt's fate at every IoU threshold 0.50:0.05:0.95, plus the
overlaps one asks about next (best gt of any class, best detection of another class).

COCO's rules, per image and category (pycocotools 2.0, ``cocoeval.py``):

1. Detections are sorted by score, highest first, stably (ties keep results-list order); only the
   first ``max_dets`` (100) of each image *and category* take part (the rest: ``evaluated=False``).
2. A gt is ignored iff it is a crowd or its ``area`` lies outside [0, 1e10] (an annotation's own
   ``ignore`` key is overwritten with ``iscrowd``). Gts are sorted ignored last, stably.
3. IoU is pycocotools' ``bbIou`` in float64 on ``xywh``: 0 without overlap, and for a crowd gt the
   union is the detection's own area.
4. At each threshold t, each detection in turn takes, among the gts still free (a crowd gt is never
   used up), the one of highest IoU >= t; a regular gt beats any ignored one, and on an IoU tie the
   later gt wins (COCO's loop keeps a candidate when IoU >= best so far).
5. A detection matched to an ignored gt is ignored (neither TP nor FP), as is an unmatched one whose
   area ``w * h`` lies outside [0, 1e10]. Of several detections on one crowd gt, ``gtMatches`` (and
   ``GtRecord.matched``) keeps the last.

Image-categories are independent, so the greedy loop runs over detection rank 0 .. max_dets - 1
and advances every image-category at once, padded to the most detections (D) and gts (G) of one;
blocks of ``PAIRS_PER_BLOCK`` image-categories (P) bound the memory. Shapes: N results entries,
M gts, T thresholds. Records hold absolute-pixel ``xyxy`` boxes; the COCO inputs stay ``xywh``.
(COCOeval stores 0 for "no match" and so misreads annotation id 0; here 0 is an ordinary id.)
"""
from __future__ import annotations

import csv
import gc
import io
import json
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from detviz._io import write_atomic
from detviz.evaluation.cocotable import AREA_ALL, UNMATCHED, CocoTable, DetArrays, GtArrays, read_coco_table

__all__ = ["IOU_THRESHOLDS", "MAX_DETS", "DetectionRecord", "GtRecord", "ObjectRecords", "coco_box_iou",
           "match_detections"]

IOU_THRESHOLDS = tuple(np.linspace(0.5, 0.95, 10).tolist())  # COCOeval's Params().iouThrs, bit for bit
MAX_DETS = 100  # COCOeval's largest maxDets
PAIRS_PER_BLOCK = 4096  # image-categories matched at once: about 4096 * G * 60 bytes
BOX_COLUMNS = ("x1", "y1", "x2", "y2")


class DetectionRecord(NamedTuple):
    """One entry of the results list and what COCO's matching made of it."""
    index: int  # position in the results list (loadRes gives it id index + 1)
    image_id: int
    category_id: int
    score: float
    box: tuple[float, float, float, float]  # xyxy pixels
    rank: int  # 0-based place among its image-category's detections by score
    evaluated: bool  # rank < max_dets: COCOeval drops the others
    matched: tuple  # per threshold: annotation id of the matched gt, or None
    ignored: tuple  # per threshold: neither TP nor FP (matched an ignored gt)
    best_gt_iou: float  # best IoU with a non-crowd gt of any class; 0.0 without overlap
    best_gt_ann_id: int | None  # that gt (None without overlap)
    best_gt_category_id: int | None
    best_same_iou: float  # best IoU with a non-crowd gt of its own class


class GtRecord(NamedTuple):
    """One ground-truth annotation and what COCO's matching made of it."""
    ann_id: int
    image_id: int
    category_id: int
    box: tuple[float, float, float, float]  # xyxy pixels
    area: float  # the annotation's "area" field (w * h when absent)
    iscrowd: bool
    ignored: bool  # crowd or area outside "all": never a false negative
    matched: tuple  # per threshold: results index of the matched detection, or None
    best_same_iou: float  # best plain IoU of a detection of its class (any rank)
    best_other_iou: float  # best plain IoU of a detection of another class
    best_other_category_id: int | None  # that detection's class (None without overlap)


@dataclass(frozen=True)
class ObjectRecords:
    """Every detection (results-list order) and gt (annotation order), matched at ``iou_thresholds``."""
    detections: list[DetectionRecord]
    gts: list[GtRecord]
    iou_thresholds: tuple[float, ...]
    max_dets: int

    def threshold_index(self, iou: float) -> int:
        """Position of ``iou`` in ``iou_thresholds``; ValueError when it is not one of them."""
        found = [i for i, threshold in enumerate(self.iou_thresholds) if math.isclose(threshold, iou)]
        if found:
            return found[0]
        raise ValueError(f"iou must be one of {[round(t, 2) for t in self.iou_thresholds]}, got {iou!r}")

    def tp_fp_fn(self, iou: float = 0.5) -> dict:
        """``{"iou", "tp", "fp", "fn", "ignored"}`` at one threshold, as COCOeval scores them: tp + fn =
        regular (not ignored) gts, tp + fp + ignored = evaluated detections."""
        t = self.threshold_index(iou)
        evaluated = [d for d in self.detections if d.evaluated]
        tp = sum(d.matched[t] is not None and not d.ignored[t] for d in evaluated)
        ignored = sum(d.ignored[t] for d in evaluated)
        fn = sum(not g.ignored and g.matched[t] is None for g in self.gts)
        return {"iou": self.iou_thresholds[t], "tp": tp, "fp": len(evaluated) - tp - ignored, "fn": fn,
                "ignored": ignored}

    def to_rows(self) -> list[dict]:
        """One flat dict per object: ``kind`` ("detection" or "gt"), the record's fields, the box as
        x1, y1, x2, y2 and per-threshold values as ``matched@0.50``, ``ignored@0.50``, ...."""
        names = [f"{t:.2f}" for t in self.iou_thresholds]
        return ([_flat_row("detection", d, names) for d in self.detections]
                + [_flat_row("gt", g, names) for g in self.gts])

    def write_csv(self, path) -> None:
        """``to_rows`` as CSV, written atomically; empty cells for None and for the other kind's columns."""
        rows, first_gt, text = self.to_rows(), len(self.detections), io.StringIO()
        columns = dict.fromkeys(key for row in rows[:1] + rows[first_gt:first_gt + 1] for key in row)
        writer = csv.DictWriter(text, fieldnames=list(columns), restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(path, text.getvalue())

    def write_json(self, path) -> None:
        """``{"iou_thresholds", "max_dets", "detections", "gts"}`` (records as dicts), strict JSON, atomically."""
        document = {"iou_thresholds": list(self.iou_thresholds), "max_dets": self.max_dets,
                    "detections": [d._asdict() for d in self.detections], "gts": [g._asdict() for g in self.gts]}
        write_atomic(path, json.dumps(document, allow_nan=False))


def _flat_row(kind: str, record, names: list[str]) -> dict:
    """A record as one flat dict; a tuple field other than ``box`` holds one value per threshold."""
    row = {"kind": kind}
    for field, value in zip(record._fields, record):
        if isinstance(value, tuple):  # the box, or one value per threshold
            row.update(zip(BOX_COLUMNS if field == "box" else [f"{field}@{name}" for name in names], value))
        else:
            row[field] = value
    return row


def coco_box_iou(dets_xywh: np.ndarray, gts_xywh: np.ndarray, gt_crowd) -> np.ndarray:
    """IoU exactly as pycocotools' ``bbIou`` (``maskApi.c``) computes it, so thresholds and ties agree.

    Areas are ``w * h``, a crowd gt's union is the detection's area, boxes without overlap get 0
    (never NaN). Float64, not ``detviz.boxes.box_iou``'s float32: a last bit flips a match at 0.5.

    Args:
        dets_xywh (np.ndarray[..., 4]), gts_xywh (np.ndarray[..., 4]): COCO ``xywh`` pixels that
            broadcast against each other (pairwise: ``[D, 1, 4]`` and ``[1, G, 4]`` -> ``[D, G]``).
        gt_crowd (bool or np.ndarray[...]): whether each gt is a crowd, broadcastable likewise.
    Returns:
        np.ndarray[...]: float64 in [0, 1], the broadcast shape.
    """
    dx, dy, dw, dh = np.moveaxis(np.asarray(dets_xywh, dtype=np.float64), -1, 0)
    gx, gy, gw, gh = np.moveaxis(np.asarray(gts_xywh, dtype=np.float64), -1, 0)
    inter_w = np.minimum(dx + dw, gx + gw) - np.maximum(dx, gx)
    inter_h = np.minimum(dy + dh, gy + gh) - np.maximum(dy, gy)
    inter = inter_w * inter_h
    union = np.where(gt_crowd, dw * dh, dw * dh + gw * gh - inter)  # bbIou's order of operations
    shape = np.broadcast_shapes(inter.shape, union.shape)
    overlap = np.broadcast_to((inter_w > 0) & (inter_h > 0), shape)
    return np.divide(inter, union, out=np.zeros(shape), where=overlap)


def _pad_rows(members: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Pair p owns ``members[bounds[p]:bounds[p + 1]]`` -> [P, most members] int64, UNMATCHED-padded."""
    counts = np.diff(bounds)  # [P]
    rows = np.repeat(np.arange(len(counts)), counts)
    cols = np.arange(bounds[0], bounds[-1]) - np.repeat(bounds[:-1], counts)
    slots = np.full((len(counts), counts.max()), UNMATCHED, dtype=np.int64)
    slots[rows, cols] = members[bounds[0]:bounds[-1]]
    return slots


def _best_candidate(candidates: np.ndarray, iou: np.ndarray, regular: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO's pick among candidate gts: a regular gt beats any ignored one, then the highest IoU, then
    the later slot. candidates [R, T, G], iou [R, G], regular [R, G] -> (slot [R, T], found [R, T])."""
    regular = regular[:, None, :]  # [R, 1, G]
    has_regular = (candidates & regular).any(axis=-1, keepdims=True)  # [R, T, 1]
    pool = candidates & (regular | ~has_regular)
    key = np.where(pool, iou[:, None, :], -np.inf)  # [R, T, G]
    slot = key.shape[-1] - 1 - np.argmax(key[..., ::-1], axis=-1)  # argmax of the reversed row: the last maximum
    return slot, pool.any(axis=-1)


def _match_block(det_slots: np.ndarray, gt_slots: np.ndarray, dets: DetArrays, gts: GtArrays,
                 thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of P image-categories at once, one detection rank per step. det_slots [P, D]:
    detection indices by descending score; gt_slots [P, G]: gt indices, ignored ones last; both
    UNMATCHED-padded. Returns the partner's index (or UNMATCHED): det_to_gt [P, D, T], gt_to_det [P, G, T]."""
    gt_valid = gt_slots != UNMATCHED
    gt_xywh = gts.xywh[gt_slots]  # [P, G, 4]; padding reads gt -1, masked by gt_valid
    crowd = gts.crowd[gt_slots] & gt_valid  # [P, G]
    regular = ~gts.ignored[gt_slots] & gt_valid
    det_to_gt = np.full((*det_slots.shape, len(thresholds)), UNMATCHED, dtype=np.int64)  # [P, D, T]
    gt_to_det = np.full((*gt_slots.shape, len(thresholds)), UNMATCHED, dtype=np.int64)  # [P, G, T]
    used = np.zeros((len(gt_slots), len(thresholds), gt_slots.shape[1]), dtype=bool)  # [P, T, G] taken non-crowd
    for rank in range(det_slots.shape[1]):
        rows = np.nonzero(det_slots[:, rank] != UNMATCHED)[0]  # [R] pairs with a detection at this rank
        box = dets.xywh[det_slots[rows, rank]]  # [R, 4]
        iou = coco_box_iou(box[:, None, :], gt_xywh[rows], crowd[rows])  # [R, G]
        free = gt_valid[rows, None, :] & ~used[rows]  # [R, T, G]
        candidates = free & (iou[:, None, :] >= thresholds[None, :, None])
        slot, found = _best_candidate(candidates, iou, regular[rows])  # [R, T] each
        r, t = np.nonzero(found)
        p, g = rows[r], slot[r, t]
        det_to_gt[p, rank, t] = gt_slots[p, g]
        gt_to_det[p, g, t] = det_slots[p, rank]  # a later detection on a crowd gt overwrites, as in gtMatches
        used[p, t, g] = ~crowd[p, g]  # a crowd gt stays free
    return det_to_gt, gt_to_det


def _greedy_match(dets: DetArrays, gts: GtArrays, det_key: np.ndarray, gt_key: np.ndarray, by_score: np.ndarray,
                  evaluated: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO's matching of every image-category (``det_key [N]``, ``gt_key [M]``) among the ``evaluated``
    detections; ``by_score [N]`` orders them by key, then by descending score (stable).
    Returns ``det_match [N, T]`` gt indices and ``gt_match [M, T]`` detection indices, or UNMATCHED."""
    det_match = np.full((len(dets.score), len(thresholds)), UNMATCHED, dtype=np.int64)
    gt_match = np.full((len(gts.ann_ids), len(thresholds)), UNMATCHED, dtype=np.int64)
    pairs = np.intersect1d(det_key[evaluated], gt_key)  # image-categories with detections and gts
    det_members = by_score[(evaluated & np.isin(det_key, pairs))[by_score]]
    gt_members = np.nonzero(np.isin(gt_key, pairs))[0]
    gt_members = gt_members[np.lexsort((gts.ignored[gt_members], gt_key[gt_members]))]  # ignored last, stable
    det_bounds = np.append(np.searchsorted(det_key[det_members], pairs), len(det_members))  # [pairs + 1]
    gt_bounds = np.append(np.searchsorted(gt_key[gt_members], pairs), len(gt_members))
    for start in range(0, len(pairs), PAIRS_PER_BLOCK):
        block = slice(start, min(start + PAIRS_PER_BLOCK, len(pairs)) + 1)
        det_slots, gt_slots = _pad_rows(det_members, det_bounds[block]), _pad_rows(gt_members, gt_bounds[block])
        det_to_gt, gt_to_det = _match_block(det_slots, gt_slots, dets, gts, thresholds)
        det_match[det_slots[det_slots != UNMATCHED]] = det_to_gt[det_slots != UNMATCHED]  # [*, T] rows
        gt_match[gt_slots[gt_slots != UNMATCHED]] = gt_to_det[gt_slots != UNMATCHED]
    return det_match, gt_match


class _Overlaps(NamedTuple):
    det_best_iou: np.ndarray  # [N] best IoU with a non-crowd gt of any class
    det_best_gt: np.ndarray  # [N] that gt, UNMATCHED without overlap
    det_same_iou: np.ndarray  # [N] best IoU with a non-crowd gt of its class
    gt_same_iou: np.ndarray  # [M] best IoU of a detection of its class
    gt_other_iou: np.ndarray  # [M] best IoU of a detection of another class
    gt_other_det: np.ndarray  # [M] that detection, UNMATCHED without overlap


def _overlaps_per_image(dets: DetArrays, gts: GtArrays, num_images: int) -> _Overlaps:
    """Plain IoU (no crowd rule) of every detection with every gt of its image, all ranks."""
    n, m = len(dets.score), len(gts.ann_ids)
    out = _Overlaps(np.zeros(n), np.full(n, UNMATCHED), np.zeros(n), np.zeros(m), np.zeros(m), np.full(m, UNMATCHED))
    det_order, gt_order = np.argsort(dets.image, kind="stable"), np.argsort(gts.image, kind="stable")
    det_bounds = np.searchsorted(dets.image[det_order], np.arange(num_images + 1))
    gt_bounds = np.searchsorted(gts.image[gt_order], np.arange(num_images + 1))
    for image in np.intersect1d(dets.image, gts.image):
        d = det_order[det_bounds[image]:det_bounds[image + 1]]  # [Di]
        g = gt_order[gt_bounds[image]:gt_bounds[image + 1]]  # [Gi]
        iou = coco_box_iou(dets.xywh[d][:, None, :], gts.xywh[g][None, :, :], False)  # [Di, Gi]
        same = dets.category[d][:, None] == gts.category[g][None, :]  # [Di, Gi]
        objects = np.where(gts.crowd[g][None, :], 0.0, iou)  # a crowd region is not an object to find
        best = objects.argmax(axis=1)  # [Di]
        out.det_best_iou[d] = objects[np.arange(len(d)), best]
        out.det_best_gt[d] = np.where(out.det_best_iou[d] > 0, g[best], UNMATCHED)  # no overlap: no best gt
        out.det_same_iou[d] = np.where(same, objects, 0.0).max(axis=1)
        out.gt_same_iou[g] = np.where(same, iou, 0.0).max(axis=0)
        other = np.where(same, 0.0, iou)
        best = other.argmax(axis=0)  # [Gi]
        out.gt_other_iou[g] = other[best, np.arange(len(g))]
        out.gt_other_det[g] = np.where(out.gt_other_iou[g] > 0, d[best], UNMATCHED)
    return out


def _or_none(ids) -> np.ndarray:
    """``ids`` as an object array with a trailing None: indexing it with UNMATCHED (-1) reads None."""
    return np.array([*ids, None], dtype=object)


def _xyxy(xywh: np.ndarray) -> list[tuple]:
    return list(map(tuple, np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).tolist()))


def _records(dets: DetArrays, gts: GtArrays, ids: tuple[list, list], rank: np.ndarray, evaluated: np.ndarray,
             det_match: np.ndarray, gt_match: np.ndarray, overlaps: _Overlaps) -> tuple[list, list]:
    """Array columns -> (one DetectionRecord per results entry, one GtRecord per annotation).
    det_match [N, T]: gt indices; gt_match [M, T]: detection indices."""
    image_ids, category_ids, ann_ids = _or_none(ids[0]), _or_none(ids[1]), _or_none(gts.ann_ids)
    area = dets.xywh[:, 2] * dets.xywh[:, 3]  # loadRes's "area" of a bbox result
    outside = (area < AREA_ALL[0]) | (area > AREA_ALL[1])
    on_ignored = np.append(gts.ignored, False)[det_match]  # [N, T]; UNMATCHED (-1) reads the False
    ignored = np.where(det_match != UNMATCHED, on_ignored, (outside & evaluated)[:, None])  # [N, T]
    best_gt_category = np.append(gts.category, UNMATCHED)[overlaps.det_best_gt]  # [N]
    detections = list(map(DetectionRecord._make, zip(
        range(len(dets.score)), image_ids[dets.image].tolist(), category_ids[dets.category].tolist(),
        dets.score.tolist(), _xyxy(dets.xywh), rank.tolist(), evaluated.tolist(),
        map(tuple, ann_ids[det_match].tolist()), map(tuple, ignored.tolist()), overlaps.det_best_iou.tolist(),
        ann_ids[overlaps.det_best_gt].tolist(), category_ids[best_gt_category].tolist(),
        overlaps.det_same_iou.tolist())))
    matched = np.where(gt_match == UNMATCHED, None, gt_match.astype(object))  # [M, T] results index or None
    other_category = np.append(dets.category, UNMATCHED)[overlaps.gt_other_det]  # [M]
    gt_records = list(map(GtRecord._make, zip(
        gts.ann_ids, image_ids[gts.image].tolist(), category_ids[gts.category].tolist(), _xyxy(gts.xywh),
        gts.area.tolist(), gts.crowd.tolist(), gts.ignored.tolist(), map(tuple, matched.tolist()),
        overlaps.gt_same_iou.tolist(), overlaps.gt_other_iou.tolist(), category_ids[other_category].tolist())))
    return detections, gt_records


def match_table(table: CocoTable, gts: GtArrays | None = None) -> tuple[np.ndarray, np.ndarray]:
    """COCO's matching of a table's evaluated detections at the ten thresholds: ``(det_match [N, T]`` gt
    indices, ``gt_match [M, T]`` detection indices``)``, UNMATCHED where none. ``gts`` replaces the
    table's gts (the same annotations with another area range's ignore flags, as ``coco_metrics`` does)."""
    return _greedy_match(table.dets, table.gts if gts is None else gts, table.det_key, table.gt_key,
                         table.by_score, table.evaluated, np.array(IOU_THRESHOLDS))


def match_detections(coco_gt, results, *, max_dets: int = MAX_DETS) -> ObjectRecords:
    """Match a COCO results list to its ground truth as ``COCOeval.evaluate`` does, object by object.

    Args:
        coco_gt: ``pycocotools.coco.COCO`` (not modified) or the path of a COCO json.
        results: list of ``{"image_id", "category_id", "bbox": [x, y, w, h] pixels, "score"}``
            (the COCO results format; not modified).
        max_dets: detections kept per image and category, COCOeval's ``maxDets[-1]``.
    Returns:
        :class:`ObjectRecords` at the ten COCO thresholds, area range "all".
    Raises:
        ValueError: naming the entry: an unknown image or category, a score that is not finite, a bbox
            not 4 finite numbers or of negative width or height; a malformed annotation; bad ``max_dets``.
        TypeError: ``coco_gt`` or ``results`` of the wrong type.
    """
    table = read_coco_table(coco_gt, results, max_dets)
    det_match, gt_match = match_table(table)
    overlaps = _overlaps_per_image(table.dets, table.gts, len(table.ids[0]))
    collecting = gc.isenabled()
    gc.disable()  # records hold no cycles; 500k new tuples would set off full collections that cost seconds
    try:
        detections, gt_records = _records(table.dets, table.gts, table.ids, table.rank, table.evaluated,
                                          det_match, gt_match, overlaps)
        return ObjectRecords(detections, gt_records, IOU_THRESHOLDS, max_dets)
    finally:
        if collecting:
            gc.enable()
