"""TIDE error decomposition of box detections, computed as the authors' ``tidecv`` 1.0.1 does.

Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020.
Every detection that is not a true positive at IoU 0.5 gets one error type (Cls, Loc, Both,
Dupe, Bkg) and every gt nothing finds is a Miss. Each type is then fixed on its own, from the
original state, and ``dAP = AP50(fixed) - AP50`` is what that type costs, in AP points 0..100.

tidecv's rules, followed here (``POS_IOU`` = 0.5, ``BG_IOU`` = 0.1, ``MAX_DETS`` = 100):

1. Images are visited in the order of the gt json. In each, the detections are sorted by
   score (stable: equal scores keep their order in ``results``) and only the first 100, all
   classes together, are looked at; the rest are ``BEYOND_MAX_DETS`` and count nowhere.
2. Crowd gts (``iscrowd`` 1) are ignore regions, never gts. IoU is ``pycocotools.mask.iou`` on
   the COCO ``xywh`` boxes (tidecv's own call), so IoUs at exactly 0.5 fall the same way; the
   boxes stay ``xywh`` in this module because they never leave the COCO edge.
3. Matching: in score order each detection takes the unused same-class gt of highest IoU
   (the first in annotation order on ties) when that IoU is >= 0.5.
4. A detection left unmatched whose crowd IoU (intersection / detection area) with a
   same-class crowd gt is > 0.5 (strictly) is *ignored*: it leaves the AP ranking, yet still
   gets an error type below, and a fix may still turn it into a true positive (rule 7).
5. An unmatched (or ignored) detection gets the first type that applies: the image has no
   non-crowd gt -> Bkg; highest same-class IoU (matched gts included) in [0.1, 0.5] -> Loc
   (blaming that gt); highest other-class IoU >= 0.5 -> Cls (that gt); highest IoU with a
   matched same-class gt >= 0.5 -> Dupe; highest IoU with any gt <= 0.1 -> Bkg; else Both.
6. A Cls or Loc error on an unmatched gt *claims* it; the first claimant (highest score) is
   the gt's best claimant, and the gt takes that error's type instead of Miss. A gt neither
   matched nor claimed is a Miss.
7. Fixing a type T: every detection of type T leaves the ranking, except best claimants of a
   T error, which come back as true positives (in the gt's class for Cls). Fixing Miss removes
   the Miss gts from the gt count. ``dAP_T = max(mAP_fixed - mAP, 0)`` (tidecv drops negative
   values as binning noise).
8. FalsePos: every true positive gets score 1 and every false positive 0 (perfect precision).
   FalseNeg: the gt count of each class becomes its number of true positives (perfect
   recall). These two are not clipped at 0.
9. AP of one class: precision made non-increasing from the right; at each recall
   r = 0, 0.01, ..., 1 the precision of the first ranking point with recall >= r (0 if none);
   mean * 100. A class with no gt has AP 0. tidecv rebuilds a fixed ranking as "error points
   in visiting order, then true positives", which only matters for tied scores; so does this.
10. mAP: mean over the classes with a gt or a scored (not ignored) detection, once the fix is
    applied. So a category with detections but no gt boxes counts with AP 0 (COCOeval skips
    it), and a class a fix leaves empty drops out of the mean.

Where detviz differs, deliberately:

* Bad input raises ``ValueError`` naming the entry: tidecv silently skips results on images
  missing from the gt, and scores a category id missing from the gt as a class of its own.
* With no class left to average (say, empty results, after the Miss fix) tidecv raises
  ``ZeroDivisionError``; here that mean is 0.
* tidecv reports errors for the whole dataset only. ``per_class`` applies the same fixes to one
  class: ``AP_k(fixed) - AP_k``, main types clipped at 0; the overall value is not their mean.

This AP50 is not ``evaluate_coco``'s AP50: tidecv keeps 100 detections per image (COCOeval:
per image and class), counts categories without gt, ignores on crowd IoU > 0.5 (COCOeval >=)
and samples recall at ``i / 100`` (COCOeval: ``np.linspace``).
"""
from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from os import PathLike
from typing import NamedTuple

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from detviz._validate import is_finite_number

__all__ = ["TideScores", "TideResult", "tide_errors", "MAIN_ERRORS", "SPECIAL_ERRORS", "TRUE_POSITIVE",
           "BEYOND_MAX_DETS", "FOUND", "CROWD"]

POS_IOU = 0.5  # foreground threshold: a match, and the upper end of Loc
BG_IOU = 0.1  # background threshold: the lower end of Loc, the upper end of Bkg
MAX_DETS = 100  # detections looked at per image, all classes together
RECALL_GRID = np.arange(101) / 100  # [101]; tidecv's x / 100 for x in 0..100
AP_POINTS = 100.0  # AP is reported in points, 0..100

CLS, LOC, BOTH, DUPE, BKG, MISS = "Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"
MAIN_ERRORS = (CLS, LOC, BOTH, DUPE, BKG, MISS)  # tidecv's order
FALSE_POS, FALSE_NEG = "FalsePos", "FalseNeg"
SPECIAL_ERRORS = (FALSE_POS, FALSE_NEG)
TRUE_POSITIVE = "TP"  # detection type of a match
BEYOND_MAX_DETS = "BeyondMaxDets"  # detection type of one past the image's first MAX_DETS
FOUND = "Found"  # gt type of a matched gt
CROWD = "Crowd"  # gt type of a crowd region
NO_MATCH = -1  # gt index of an unmatched detection
RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


@dataclass(frozen=True)
class TideScores:
    """AP50 and the TIDE dAPs of one class or of the whole dataset, all in AP points (0..100).

    ``errors``: ``{name: dAP for name in MAIN_ERRORS}``; ``special``: ``{"FalsePos", "FalseNeg"}``.
    """
    ap50: float
    errors: dict[str, float]
    special: dict[str, float]


@dataclass(frozen=True)
class TideResult:
    """What ``tide_errors`` returns.

    ``overall`` is what tidecv's summary prints; ``per_class`` maps category id (ascending) to
    the same numbers for the classes in the mean (rule 10). ``detection_types``,
    ``detection_gt_ids`` and ``detection_ignored`` are aligned with ``results``: the TIDE type
    (``"TP"``, an error name or ``"BeyondMaxDets"``), the ann id of the gt it matched or is
    blamed on (None for Bkg, Both and BeyondMaxDets), and whether a crowd region took it out
    of the ranking (rule 4). ``gt_types`` maps every ann id to ``"Found"``, ``"Miss"``,
    ``"Crowd"`` or the type of its best claimant (``"Cls"``/``"Loc"``, rule 6). ``counts`` is
    the number of errors of each main type, as tidecv's ``count_errors``.
    """
    overall: TideScores
    per_class: dict[int, TideScores]
    detection_types: list[str]
    detection_gt_ids: list[int | None]
    detection_ignored: list[bool]
    gt_types: dict[int, str]
    counts: dict[str, int]

    @property
    def ap50(self) -> float:
        return self.overall.ap50

    @property
    def errors(self) -> dict[str, float]:
        return self.overall.errors

    @property
    def special(self) -> dict[str, float]:
        return self.overall.special


class _Outcome(NamedTuple):
    """One looked-at detection (rule 1), in visiting order."""
    index: int  # position in ``results``
    category: int
    score: float
    kind: str  # TRUE_POSITIVE or an error name
    gt_id: int | None  # ann id matched or blamed
    ignored: bool  # out of the AP ranking (crowd, rule 4)
    fixed_category: int | None  # class it becomes a true positive in when ``kind`` is fixed


class _Results(NamedTuple):
    boxes_xywh: np.ndarray  # [P, 4] float64, COCO pixels
    category_ids: np.ndarray  # [P] int64
    scores: np.ndarray  # [P] float64
    image_ids: list  # [P]


# ---------------------------------------------------------------- inputs

def _load_ground_truth(coco_gt) -> COCO:
    if isinstance(coco_gt, COCO):
        return coco_gt
    if isinstance(coco_gt, (str, PathLike)):
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its loading progress
            return COCO(str(coco_gt))
    raise TypeError(f"coco_gt must be a pycocotools COCO or a path to a COCO json, got {type(coco_gt).__name__}")


def _check_entry(entry, index: int, image_ids: set, category_ids: set) -> None:
    where = f"results[{index}]"
    if not isinstance(entry, dict) or not set(RESULT_KEYS) <= entry.keys():
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"{where} must be a dict with keys {list(RESULT_KEYS)}, got {got}")
    bbox = entry["bbox"]
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(is_finite_number(v) for v in bbox)
            or bbox[2] < 0 or bbox[3] < 0):
        raise ValueError(f"{where}['bbox'] must be [x, y, w, h]: 4 finite numbers with w, h >= 0, got {bbox!r}")
    if not is_finite_number(entry["score"]):
        raise ValueError(f"{where}['score'] must be a finite number, got {entry['score']!r}")
    if not isinstance(entry["image_id"], Hashable) or entry["image_id"] not in image_ids:
        raise ValueError(f"{where}['image_id'] = {entry['image_id']!r} is not an image id of the ground truth")
    if not isinstance(entry["category_id"], Hashable) or entry["category_id"] not in category_ids:
        raise ValueError(f"{where}['category_id'] = {entry['category_id']!r} is not a category id of the "
                         f"ground truth, which has {sorted(category_ids)}")


def _check_results(results, coco_gt: COCO) -> _Results:
    """Validate the COCO results list and stack it into arrays."""
    if not isinstance(results, (list, tuple)):
        raise ValueError(f"results must be a list of COCO result dicts, got {type(results).__name__}")
    image_ids = {image["id"] for image in coco_gt.dataset["images"]}
    category_ids = set(coco_gt.getCatIds()) | {ann["category_id"] for ann in coco_gt.dataset["annotations"]}
    for index, entry in enumerate(results):
        _check_entry(entry, index, image_ids, category_ids)
    return _Results(
        boxes_xywh=np.array([r["bbox"] for r in results], dtype=np.float64).reshape(-1, 4),
        category_ids=np.array([r["category_id"] for r in results], dtype=np.int64),
        scores=np.array([r["score"] for r in results], dtype=np.float64),
        image_ids=[r["image_id"] for r in results])


# ---------------------------------------------------------------- one image

def _is_crowd(ann: dict) -> bool:
    return bool(ann.get("iscrowd", 0))


def _iou(boxes_xywh: np.ndarray, gt_boxes_xywh: np.ndarray, crowd: bool) -> np.ndarray:
    """IoU ``[P, M]`` of P detections and M gts by pycocotools; with ``crowd``, intersection / detection area."""
    if len(boxes_xywh) == 0 or len(gt_boxes_xywh) == 0:
        return np.zeros((len(boxes_xywh), len(gt_boxes_xywh)))
    return np.asarray(mask_utils.iou(boxes_xywh, gt_boxes_xywh, [crowd] * len(gt_boxes_xywh)))


def _greedy_match(iou_same_class: np.ndarray) -> np.ndarray:
    """Rule 3. Args: iou_same_class [P, M], detections in score order, 0 across classes.
    Returns: [P] int64, the matched gt index or NO_MATCH."""
    available = iou_same_class.copy()  # [P, M]; a column goes to 0 once its gt is taken
    matched = np.full(len(available), NO_MATCH, dtype=np.int64)
    for d in range(len(available) if available.shape[1] else 0):
        g = int(available[d].argmax())
        if available[d, g] >= POS_IOU:
            matched[d] = g
            available[:, g] = 0.0
    return matched


def _crowd_ignored(boxes_xywh, categories, matched, crowds: list[dict]) -> np.ndarray:
    """Rule 4. Returns: [P] bool, True where an unmatched detection lies in a same-class crowd."""
    crowd_boxes = np.array([c["bbox"] for c in crowds], dtype=np.float64).reshape(-1, 4)  # [Cr, 4]
    crowd_categories = np.array([c["category_id"] for c in crowds], dtype=np.int64)  # [Cr]
    inside = _iou(boxes_xywh, crowd_boxes, crowd=True) > POS_IOU  # [P, Cr]
    inside &= categories[:, None] == crowd_categories[None, :]
    return inside.any(axis=1) & (matched == NO_MATCH)


def _error_type(iou: np.ndarray, same_class: np.ndarray, gt_used: np.ndarray) -> tuple[str, int | None]:
    """Rule 5 for one detection. Args: iou, same_class, gt_used: [M] over the image's non-crowd
    gts. Returns: (error name, index of the blamed gt or None). argmax takes the first maximum."""
    if iou.size == 0:
        return BKG, None
    same = np.where(same_class, iou, 0.0)  # [M]
    g = int(same.argmax())
    if BG_IOU <= same[g] <= POS_IOU:
        return LOC, g
    other = np.where(same_class, 0.0, iou)  # [M]
    g = int(other.argmax())
    if other[g] >= POS_IOU:
        return CLS, g
    used_same = np.where(gt_used, same, 0.0)  # [M]
    g = int(used_same.argmax())
    if used_same[g] >= POS_IOU:
        return DUPE, g
    if iou.max() <= BG_IOU:
        return BKG, None
    return BOTH, None


def _evaluate_image(order: list[int], dets: _Results, anns: list[dict]) -> tuple[list[_Outcome], dict[int, str]]:
    """Rules 2-6 for one image.

    Args:
        order: indices into ``dets`` of this image's looked-at detections, in score order.
        anns: the image's annotations (crowd ones included), in json order.

    Returns:
        (one ``_Outcome`` per detection in ``order``, ``{ann id: gt type}``).
    """
    gts = [a for a in anns if not _is_crowd(a)]
    boxes_xywh, categories = dets.boxes_xywh[order], dets.category_ids[order]  # [P, 4], [P]
    gt_categories = np.array([a["category_id"] for a in gts], dtype=np.int64)  # [M]
    iou = _iou(boxes_xywh, np.array([a["bbox"] for a in gts], dtype=np.float64).reshape(-1, 4), crowd=False)
    same_class = categories[:, None] == gt_categories[None, :]  # [P, M]
    matched = _greedy_match(np.where(same_class, iou, 0.0))  # [P]
    ignored = _crowd_ignored(boxes_xywh, categories, matched, [a for a in anns if _is_crowd(a)])  # [P]
    gt_used = np.zeros(len(gts), dtype=bool)
    gt_used[matched[matched != NO_MATCH]] = True

    kinds, blamed, claimant = [], [], {}  # claimant: gt index -> its best claimant's d
    for d in range(len(order)):
        if matched[d] != NO_MATCH:
            kind, g = TRUE_POSITIVE, int(matched[d])
        else:
            kind, g = _error_type(iou[d], same_class[d], gt_used)
        if kind in (CLS, LOC) and not gt_used[g]:
            claimant.setdefault(g, d)  # visiting order is score order: the first claimant scores highest
        kinds.append(kind)
        blamed.append(g)

    best = {d: g for g, d in claimant.items()}
    outcomes = [_Outcome(index=i, category=int(categories[d]), score=float(dets.scores[i]), kind=kinds[d],
                         gt_id=None if blamed[d] is None else gts[blamed[d]]["id"], ignored=bool(ignored[d]),
                         fixed_category=int(gt_categories[best[d]]) if d in best else None)
                for d, i in enumerate(order)]
    gt_types = {a["id"]: CROWD for a in anns if _is_crowd(a)}
    for g, ann in enumerate(gts):
        gt_types[ann["id"]] = FOUND if gt_used[g] else kinds[claimant[g]] if g in claimant else MISS
    return outcomes, gt_types


# ---------------------------------------------------------------- AP and fixes

def _average_precision(points: list[tuple[float, bool]], num_gt: int) -> float:
    """Rule 9. Args: points: (score, is true positive), ties kept in this order. Returns: AP in points."""
    if num_gt == 0 or not points:
        return 0.0
    scores = np.array([s for s, _ in points], dtype=np.float64)  # [P]
    is_tp = np.array([t for _, t in points], dtype=bool)[np.argsort(-scores, kind="stable")]  # [P]
    num_tp = np.cumsum(is_tp)  # [P]
    precision = num_tp / np.arange(1, len(is_tp) + 1)  # [P]
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # non-increasing from the right
    first = np.searchsorted(num_tp / num_gt, RECALL_GRID, side="left")  # [101], P where recall never gets there
    sampled = np.append(precision, 0.0)[first]  # [101]
    return sum(sampled.tolist()) / len(RECALL_GRID) * AP_POINTS  # a plain left-to-right sum, as tidecv's


def _original_ranking(outcomes: list[_Outcome]) -> dict[int, list]:
    ranking = {}
    for o in outcomes:
        if not o.ignored:
            ranking.setdefault(o.category, []).append((o.score, o.kind == TRUE_POSITIVE))
    return ranking


def _fixed_ranking(outcomes: list[_Outcome], fixed_kind: str | None = None,
                   perfect_precision: bool = False) -> dict[int, list]:
    """Rules 7-9: the ranking of each class as tidecv rebuilds it (error points, then true
    positives), with ``fixed_kind`` fixed, and scores 1 / 0 with ``perfect_precision``."""
    ranking = {}
    for o in outcomes:
        if o.kind == TRUE_POSITIVE:
            continue
        if o.kind == fixed_kind:
            if o.fixed_category is not None:
                ranking.setdefault(o.fixed_category, []).append((o.score, True))
        elif not o.ignored:
            ranking.setdefault(o.category, []).append((0.0 if perfect_precision else o.score, False))
    for o in outcomes:
        if o.kind == TRUE_POSITIVE:
            ranking.setdefault(o.category, []).append((1.0 if perfect_precision else o.score, True))
    return ranking


def _class_aps(ranking: dict[int, list], num_gt: dict[int, int], classes: list[int]) -> tuple[float, dict[int, float]]:
    """Rule 10. Returns: (mAP over the classes left non-empty, ``{class: AP}`` for all ``classes``)."""
    aps = {k: _average_precision(ranking.get(k, []), num_gt[k]) for k in classes}
    kept = [aps[k] for k in classes if ranking.get(k) or num_gt[k] > 0]
    return (sum(kept) / len(kept) if kept else 0.0), aps


def _gt_counts(gt_categories: dict[int, int], gt_types: dict[int, str], classes: list[int],
               excluded: tuple[str, ...] = ()) -> dict[int, int]:
    """Non-crowd gts per class, leaving out those whose type is in ``excluded``."""
    counts = Counter(c for ann_id, c in gt_categories.items() if gt_types[ann_id] not in excluded)
    return {k: counts[k] for k in classes}


def _scores(outcomes: list[_Outcome], gt_categories: dict[int, int],
            gt_types: dict[int, str]) -> tuple[TideScores, dict[int, TideScores]]:
    """AP50, the fixed mAPs and their dAPs, overall and per class.

    Args:
        gt_categories: ``{ann id: category id}`` of the non-crowd gts.
        gt_types: ``{ann id: gt type}``.
    """
    original = _original_ranking(outcomes)
    classes = sorted(set(gt_categories.values()) | set(original))
    num_gt = _gt_counts(gt_categories, gt_types, classes)
    base_map, base_aps = _class_aps(original, num_gt, classes)
    fixed = {kind: _class_aps(_fixed_ranking(outcomes, fixed_kind=kind), num_gt, classes)
             for kind in MAIN_ERRORS if kind != MISS}
    fixed[MISS] = _class_aps(_fixed_ranking(outcomes), _gt_counts(gt_categories, gt_types, classes, (MISS,)), classes)
    unmatched = (MISS, CLS, LOC)  # the non-crowd gt types other than FOUND
    special = {FALSE_POS: _class_aps(_fixed_ranking(outcomes, perfect_precision=True), num_gt, classes),
               FALSE_NEG: _class_aps(_fixed_ranking(outcomes), _gt_counts(gt_categories, gt_types, classes, unmatched),
                                     classes)}

    overall = TideScores(ap50=base_map,
                         errors={kind: max(fixed[kind][0] - base_map, 0.0) for kind in MAIN_ERRORS},
                         special={kind: special[kind][0] - base_map for kind in SPECIAL_ERRORS})
    per_class = {k: TideScores(ap50=base_aps[k],
                               errors={kind: max(fixed[kind][1][k] - base_aps[k], 0.0) for kind in MAIN_ERRORS},
                               special={kind: special[kind][1][k] - base_aps[k] for kind in SPECIAL_ERRORS})
                 for k in classes}
    return overall, per_class


# ---------------------------------------------------------------- public

def tide_errors(coco_gt, results) -> TideResult:
    """TIDE's error breakdown of box detections at IoU 0.5, as tidecv 1.0.1 computes it.

    Args:
        coco_gt: the ground truth, a ``pycocotools.coco.COCO`` or the path of its json. Crowd
            annotations (``iscrowd`` 1) are ignore regions.
        results: COCO results list, ``[{"image_id", "category_id", "bbox": [x, y, w, h] pixels,
            "score"}, ...]``; ids must be in ``coco_gt``. Not modified.

    Returns:
        ``TideResult``: ``ap50``, ``errors`` (dAP of Cls, Loc, Both, Dupe, Bkg, Miss) and
        ``special`` (FalsePos, FalseNeg), all in AP points 0..100 like tidecv's summary; the same
        per class; and the TIDE type of every detection and every gt.

    Raises:
        TypeError: ``coco_gt`` is neither a COCO nor a path.
        ValueError: an entry of ``results`` is malformed or names an unknown image or category.
    """
    coco_gt = _load_ground_truth(coco_gt)
    dets = _check_results(results, coco_gt)
    anns_per_image = {image["id"]: [] for image in coco_gt.dataset["images"]}
    for ann in coco_gt.dataset["annotations"]:
        anns_per_image[ann["image_id"]].append(ann)
    dets_per_image = {image_id: [] for image_id in anns_per_image}
    for index, image_id in enumerate(dets.image_ids):
        dets_per_image[image_id].append(index)

    outcomes, gt_types = [], {}
    for image_id, anns in anns_per_image.items():
        in_image = sorted(dets_per_image[image_id], key=lambda i: -dets.scores[i])  # stable: ties keep results order
        image_outcomes, image_gt_types = _evaluate_image(in_image[:MAX_DETS], dets, anns)
        outcomes += image_outcomes
        gt_types.update(image_gt_types)

    gt_categories = {a["id"]: a["category_id"] for a in coco_gt.dataset["annotations"] if not _is_crowd(a)}
    overall, per_class = _scores(outcomes, gt_categories, gt_types)
    detection_types = [BEYOND_MAX_DETS] * len(dets.scores)
    detection_gt_ids, detection_ignored = [None] * len(dets.scores), [False] * len(dets.scores)
    for o in outcomes:
        detection_types[o.index], detection_gt_ids[o.index], detection_ignored[o.index] = o.kind, o.gt_id, o.ignored
    counts = {kind: sum(1 for o in outcomes if o.kind == kind) for kind in MAIN_ERRORS}
    counts[MISS] = sum(1 for t in gt_types.values() if t == MISS)
    return TideResult(overall=overall, per_class=per_class, detection_types=detection_types,
                      detection_gt_ids=detection_gt_ids, detection_ignored=detection_ignored,
                      gt_types=gt_types, counts=counts)
