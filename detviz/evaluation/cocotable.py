"""A COCO ground truth and a results list read once into validated arrays, ranked as COCOeval ranks them.

Every COCO-style analysis in this package (``matching``, ``cocoeval``) starts from one
:class:`CocoTable`: the annotations and results as numpy columns in their own order, each checked
with an error that names the bad entry, plus each detection's rank within its image-category
(score descending, stable, as ``COCOeval.evaluateImg`` sorts) and whether that rank is within
``max_dets``. Shapes: N results entries, M annotations; boxes stay COCO ``xywh`` pixels.
"""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Hashable
from typing import NamedTuple

import numpy as np
from pycocotools.coco import COCO

from detviz._validate import is_finite_number

__all__ = ["AREA_ALL", "UNMATCHED", "CocoTable", "DetArrays", "GtArrays", "read_coco_table"]

AREA_ALL = (0.0, 1e10)  # COCOeval's area range "all": [0 ** 2, 1e5 ** 2]
UNMATCHED = -1  # index of "no partner"
RESULT_KEYS = ("image_id", "category_id", "bbox", "score")
GT_KEYS = ("image_id", "category_id", "bbox")  # and "id", which COCO() itself requires
NUMERIC_KINDS = "iuf"  # numpy dtype kinds of int, unsigned and float arrays: not bool, str or object


class GtArrays(NamedTuple):
    """The annotations as columns, in annotation order (COCOeval's order too)."""
    ann_ids: list  # [M]
    image: np.ndarray  # [M] int64 index into the image ids
    category: np.ndarray  # [M] int64 index into the category ids
    xywh: np.ndarray  # [M, 4] float64
    area: np.ndarray  # [M] float64
    crowd: np.ndarray  # [M] bool
    ignored: np.ndarray  # [M] bool: crowd, or area outside AREA_ALL


class DetArrays(NamedTuple):
    """The results entries as columns, in list order."""
    image: np.ndarray  # [N] int64
    category: np.ndarray  # [N] int64
    xywh: np.ndarray  # [N, 4] float64
    score: np.ndarray  # [N] float64


def _check_entry(entry, where: str, keys: tuple, image_index: dict, category_index: dict) -> None:
    """Raise ValueError naming the entry (``where``) and what was expected, if it is bad."""
    if not isinstance(entry, dict) or not set(keys) <= entry.keys():
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"{where} must be a dict with keys {list(keys)} (bbox = [x, y, w, h]), got {got}")
    for key, known, what in (("image_id", image_index, "an image"), ("category_id", category_index, "a category")):
        if not isinstance(entry[key], Hashable) or entry[key] not in known:
            raise ValueError(f"{where}: {key} {entry[key]!r} is not {what} of the ground truth (ids such as "
                             f"{list(known)[:5]})")
    if "score" in keys and not is_finite_number(entry["score"]):
        raise ValueError(f"{where}: score must be a finite number, got {entry['score']!r}")
    bbox = entry["bbox"]
    if not isinstance(bbox, (list, tuple, np.ndarray)) or len(bbox) != 4 or not all(map(is_finite_number, bbox)):
        raise ValueError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"{where}: bbox must be [x, y, w, h] with w >= 0 and h >= 0 (COCO xywh, not xyxy), "
                         f"got {bbox!r}")


def _read_entries(entries, name: str, keys: tuple, image_index: dict, category_index: dict) -> tuple:
    """Results or annotations -> (image [E] int64, category [E] int64, xywh [E, 4], score [E] float64)
    in one vectorised pass (score 0 for annotations); if anything is off, name the first bad entry."""
    num = len(entries)
    try:
        image = np.array([image_index.get(e["image_id"], UNMATCHED) for e in entries], dtype=np.int64)
        category = np.array([category_index.get(e["category_id"], UNMATCHED) for e in entries], dtype=np.int64)
        xywh = np.array([e["bbox"] for e in entries]).reshape(num, 4)
        score = np.array([e["score"] for e in entries]).reshape(num) if "score" in keys else np.zeros(num)
        readable = (score.dtype.kind in NUMERIC_KINDS and xywh.dtype.kind in NUMERIC_KINDS and (image >= 0).all()
                    and (category >= 0).all() and np.isfinite(score).all() and np.isfinite(xywh).all()
                    and (xywh[:, 2:] >= 0).all())
    except (TypeError, KeyError, ValueError):  # not a dict, a missing key, an unhashable id, a ragged bbox
        readable = False
    if not readable:
        for index, entry in enumerate(entries):
            _check_entry(entry, f"{name}[{index}]", keys, image_index, category_index)
        raise ValueError(f"{name}: a score or bbox is not readable as float64 (an integer beyond 64 bits?)")
    return image, category, xywh.astype(np.float64), score.astype(np.float64)


def _gt_arrays(coco: COCO, image_index: dict, category_index: dict) -> GtArrays:
    """The annotations as arrays, in annotation order (COCOeval's order too)."""
    anns = coco.dataset.get("annotations", [])
    image, category, xywh, _ = _read_entries(anns, "annotations", GT_KEYS, image_index, category_index)
    ann_ids = [ann["id"] for ann in anns]
    if len(set(ann_ids)) != len(ann_ids):
        raise ValueError("annotation ids must be unique: matches are reported by id")
    area = np.array([ann.get("area", ann["bbox"][2] * ann["bbox"][3]) for ann in anns], dtype=np.float64)
    crowd = np.array([bool(ann.get("iscrowd", 0)) for ann in anns], dtype=bool)
    return GtArrays(ann_ids, image, category, xywh, area, crowd, crowd | (area < AREA_ALL[0]) | (area > AREA_ALL[1]))


class CocoTable(NamedTuple):
    """A validated ground truth and results list as arrays, and COCO's per-image-category ranking."""
    coco: COCO
    ids: tuple[list, list]  # image ids, category ids (the COCO's own order)
    gts: GtArrays
    dets: DetArrays
    det_key: np.ndarray  # [N] one key per image-category
    gt_key: np.ndarray  # [M]
    by_score: np.ndarray  # [N] by image-category, then score descending (stable)
    rank: np.ndarray  # [N] 0-based place among its image-category's detections
    evaluated: np.ndarray  # [N] rank < max_dets


def read_coco_table(coco_gt, results, max_dets: int) -> CocoTable:
    """Load and validate once: the step every COCO-style analysis here starts from."""
    if not isinstance(max_dets, int) or isinstance(max_dets, bool) or max_dets < 1:
        raise ValueError(f"max_dets must be a positive int, got {max_dets!r}")
    if isinstance(coco_gt, (str, os.PathLike)):
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
            coco_gt = COCO(str(coco_gt))
    if not isinstance(coco_gt, COCO):
        raise TypeError(f"coco_gt must be a pycocotools COCO or the path of a COCO json, got {type(coco_gt).__name__}")
    ids = (list(coco_gt.imgs), list(coco_gt.cats))  # image ids, category ids
    image_index, category_index = ({value: i for i, value in enumerate(values)} for values in ids)
    if not isinstance(results, (list, tuple)):
        raise TypeError(f"results must be a list of COCO result dicts, got {type(results).__name__}")
    gts = _gt_arrays(coco_gt, image_index, category_index)
    dets = DetArrays(*_read_entries(results, "results", RESULT_KEYS, image_index, category_index))
    det_key = dets.image * len(ids[1]) + dets.category
    gt_key = gts.image * len(ids[1]) + gts.category
    by_score = np.lexsort((-dets.score, det_key))
    rank = np.empty(len(by_score), dtype=np.int64)
    rank[by_score] = np.arange(len(by_score)) - np.searchsorted(det_key[by_score], det_key[by_score])  # - first
    return CocoTable(coco_gt, ids, gts, dets, det_key, gt_key, by_score, rank, rank < max_dets)
