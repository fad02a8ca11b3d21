"""COCO evaluation of detector outputs, through pycocotools' own COCOeval.

Three steps, each a plain function:

* ``to_coco_results`` turns torchvision-style predictions (``boxes`` xyxy pixels of the
  original image, ``labels``, ``scores``) into the COCO results list: ``xywh`` boxes and
  category ids, the format pycocotools and the COCO server read.
* ``evaluate_coco`` runs ``loadRes -> COCOeval.evaluate -> accumulate -> summarize`` exactly
  as pycocotools' users do, and returns the twelve summary numbers by name, per-class AP and
  the printed table. An empty results list (which ``loadRes`` cannot load) gives zeros.
* ``precision_recall_curves`` reads the accumulated precision array back out, one
  ``(recall, precision)`` pair per class, for plotting.

pycocotools' ``precision`` array is ``[T, R, K, A, M]``: T IoU thresholds (0.50:0.05:0.95),
R = 101 recall thresholds, K categories (ascending id), A area ranges (all, small, medium,
large), M max-detection limits (1, 10, 100); -1 marks "no ground truth here". (This R is
pycocotools' recall axis, not the package's reg_max bins.)
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

__all__ = ["STAT_NAMES", "to_coco_results", "evaluate_coco", "precision_recall_curves", "prediction_from_coco_results"]

# Names of COCOeval.stats[0..11] for iou_type "bbox" and "segm", in pycocotools' order.
STAT_NAMES = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")
IOU_TYPES = ("bbox", "segm")
NO_GROUND_TRUTH = -1  # pycocotools' value in precision/stats where there is nothing to find
AREA_ALL = 0  # index of area range "all" in COCOeval.params.areaRng
BOX_DECIMALS = 2  # 0.01 px: far below what moves an IoU, and keeps results json short
COCOEVAL_PARAMS = Params("bbox")  # the default thresholds: iouThrs [T], recThrs [R]
EMPTY_NOTE = ("No detections: every metric is 0. (pycocotools' loadRes cannot load an empty "
              "results list, so COCOeval.summarize was not run.)")


# ---------------------------------------------------------------- predictions -> COCO results

def _as_numpy(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, list, tuple)):
        return np.asarray(value)
    raise TypeError(f"{name} must be a Tensor or array, got {type(value).__name__}")


def _check_prediction(prediction, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(boxes [P, 4] float64 xyxy, labels [P] int64, scores [P] float64)`` or raise ValueError."""
    where = f"predictions[{index}]"
    if not isinstance(prediction, dict) or not {"boxes", "labels", "scores"} <= prediction.keys():
        got = sorted(prediction) if isinstance(prediction, dict) else type(prediction).__name__
        raise ValueError(f"{where} must be dict(boxes=[P, 4] xyxy, labels=[P], scores=[P]), got {got}")
    boxes = _as_numpy(prediction["boxes"], f"{where}['boxes']").astype(np.float64)
    labels = _as_numpy(prediction["labels"], f"{where}['labels']")
    scores = _as_numpy(prediction["scores"], f"{where}['scores']").astype(np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}['boxes'] must have shape [P, 4] (xyxy), got {list(boxes.shape)}")
    num = boxes.shape[0]
    if labels.shape != (num,) or scores.shape != (num,):
        raise ValueError(f"{where}: labels and scores must have shape [P] with P = {num} boxes, "
                         f"got labels {list(labels.shape)} and scores {list(scores.shape)}")
    if not np.isfinite(boxes).all() or not np.isfinite(scores).all():
        raise ValueError(f"{where}: boxes and scores must be finite, got a NaN or Inf")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        first = int(np.nonzero(inverted)[0][0])
        raise ValueError(f"{where}['boxes'] must be xyxy with x2 >= x1 and y2 >= y1, got "
                         f"{boxes[first].tolist()} at index {first} (convert xywh boxes first)")
    return boxes, labels.astype(np.int64), scores


def to_coco_results(predictions, image_ids, label_to_category_id: dict) -> list[dict]:
    """Convert per-image predictions to a COCO results list.

    Args:
        predictions: one ``dict(boxes=[P, 4] float xyxy in pixels of the original image,
            labels=[P] int, scores=[P] float)`` per image (Tensor or array; P may be 0).
        image_ids: the COCO image id of each prediction, same length and order.
        label_to_category_id: contiguous label -> COCO category id
            (``CocoDetection.label_to_category_id``).

    Returns:
        ``[{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}, ...]``,
        boxes in pixels rounded to ``BOX_DECIMALS``, images in the given order and boxes in
        their given order within an image.

    Raises:
        ValueError: lengths differ, a prediction is malformed, or a label has no category.
    """
    image_ids = list(image_ids)
    if len(predictions) != len(image_ids):
        raise ValueError(f"need one image id per prediction: got {len(predictions)} predictions "
                         f"and {len(image_ids)} image ids")
    results = []
    for index, (prediction, image_id) in enumerate(zip(predictions, image_ids)):
        boxes, labels, scores = _check_prediction(prediction, index)
        unknown = sorted(set(labels.tolist()) - set(label_to_category_id))
        if unknown:
            raise ValueError(f"predictions[{index}] has labels {unknown} without a COCO category; "
                             f"label_to_category_id knows labels {sorted(label_to_category_id)}")
        boxes_xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)  # [P, 4]
        for box, label, score in zip(boxes_xywh.round(BOX_DECIMALS).tolist(), labels.tolist(), scores.tolist()):
            results.append({"image_id": int(image_id), "category_id": int(label_to_category_id[label]),
                            "bbox": box, "score": score})
    return results


# ---------------------------------------------------------------- COCOeval

def _empty_results(coco_gt: COCO) -> COCO:
    """What ``loadRes([])`` would return if it did not index ``anns[0]``."""
    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset["images"]),
                   "categories": copy.deepcopy(coco_gt.dataset["categories"]), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        res.createIndex()
    return res


def _per_class_ap(cocoeval: COCOeval, coco_gt: COCO) -> dict[str, float]:
    """AP per category name: mean of precision[:, :, k, all, maxDets=100] over entries > -1.

    Matches detectron2's COCOEvaluator; a category without ground truth gets NaN.
    """
    precision = cocoeval.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, category_id in enumerate(cocoeval.params.catIds):
        values = precision[:, :, k, AREA_ALL, -1]  # [T, R]
        values = values[values > NO_GROUND_TRUTH]
        per_class[coco_gt.cats[category_id]["name"]] = float(values.mean()) if values.size else math.nan
    return per_class


def evaluate_coco(coco_gt: COCO, results: list[dict], *, iou_type: str = "bbox") -> dict:
    """Run pycocotools' COCOeval on ``results`` against ``coco_gt``.

    Steps, as in pycocotools' demo: ``coco_gt.loadRes(results)``, ``COCOeval(gt, dt, iou_type)``,
    ``evaluate()``, ``accumulate()``, ``summarize()``. Printing is captured, not shown.
    ``loadRes`` and ``COCOeval`` write keys into each result dict (``id``, ``area``, ``iscrowd``,
    ``segmentation``; for "segm" also ``bbox`` and an RLE ``segmentation``) but never change a value
    in place (pycocotools 2.0: they assign keys and read the lists), so each dict is copied, not what it
    holds: the caller's results come back unchanged, and a results list of 100 detections per image
    is not deep-copied (which took longer than writing it as json).

    Args:
        coco_gt: ground truth, e.g. ``CocoDetection.coco``.
        results: COCO results list (``to_coco_results``); every ``image_id`` must be in ``coco_gt``.
        iou_type: "bbox" or "segm".

    Returns:
        ``{name: float for name in STAT_NAMES}`` equal to ``COCOeval.stats`` (-1 where
        ``coco_gt`` has no object in that area range), ``"per_class": {category name: AP}``
        (NaN for a category without ground truth), ``"summary_text"``: the printed table, and
        ``"cocoeval"``: the accumulated COCOeval for ``precision_recall_curves``. With no
        results every metric is 0.0, ``per_class`` is 0.0 (NaN without ground truth) and
        ``summary_text`` says why.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if not isinstance(results, list):
        raise ValueError(f"results must be a list of COCO result dicts, got {type(results).__name__}")
    unknown = sorted({r["image_id"] for r in results} - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"results name image ids {unknown[:10]} that are not in the ground truth")

    with contextlib.redirect_stdout(io.StringIO()):  # loadRes/evaluate/accumulate print progress
        coco_dt = coco_gt.loadRes([dict(result) for result in results]) if results else _empty_results(coco_gt)
        cocoeval = COCOeval(coco_gt, coco_dt, iou_type)
        cocoeval.evaluate()
        cocoeval.accumulate()
    if not results:
        metrics = {name: 0.0 for name in STAT_NAMES}
        return {**metrics, "per_class": _per_class_ap(cocoeval, coco_gt), "summary_text": EMPTY_NOTE,
                "cocoeval": cocoeval}

    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        cocoeval.summarize()
    metrics = {name: float(value) for name, value in zip(STAT_NAMES, cocoeval.stats)}
    return {**metrics, "per_class": _per_class_ap(cocoeval, coco_gt), "summary_text": table.getvalue(),
            "cocoeval": cocoeval}


# ---------------------------------------------------------------- curves

def precision_recall_curves(cocoeval_or_result, iou: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-class precision-recall curves at one IoU threshold, area "all", 100 detections.

    Args:
        cocoeval_or_result: an accumulated ``COCOeval``, the dict ``evaluate_coco`` returned, or the
            dict :func:`detviz.evaluation.accumulate.coco_metrics` returned.
        iou: one of ``params.iouThrs`` (0.50, 0.55, ..., 0.95).

    Returns:
        ``{category name: (recall [R], precision [R])}``, float64 with R = 101: recall is
        pycocotools' fixed grid 0, 0.01, ..., 1; precision is its interpolated (monotone
        non-increasing) precision there, 0 beyond the highest recall reached, and NaN for a
        category without ground truth. Keys follow category id order.
    """
    if isinstance(cocoeval_or_result, dict) and "precision" in cocoeval_or_result:  # coco_metrics' dict
        precision, names = cocoeval_or_result["precision"], cocoeval_or_result["category_names"]
        iou_thresholds, recall = COCOEVAL_PARAMS.iouThrs, COCOEVAL_PARAMS.recThrs
    else:
        cocoeval = cocoeval_or_result.get("cocoeval") if isinstance(cocoeval_or_result, dict) else cocoeval_or_result
        if not isinstance(cocoeval, COCOeval) or not cocoeval.eval:
            raise ValueError("need an accumulated COCOeval, or the dict evaluate_coco or coco_metrics returned")
        precision, iou_thresholds, recall = cocoeval.eval["precision"], cocoeval.params.iouThrs, cocoeval.params.recThrs
        names = [cocoeval.cocoGt.cats[category_id]["name"] for category_id in cocoeval.params.catIds]
    matches = np.nonzero(np.isclose(iou_thresholds, iou))[0]
    if matches.size == 0:
        raise ValueError(f"iou must be one of the evaluated thresholds {np.round(iou_thresholds, 2).tolist()}, got {iou}")
    precision = precision[matches[0], :, :, AREA_ALL, -1]  # [T, R, K, A, M] -> [R, K]
    recall = np.asarray(recall, dtype=np.float64)  # [R]
    curves = {}
    for k, name in enumerate(names):
        values = precision[:, k].astype(np.float64)  # [R]
        values[values <= NO_GROUND_TRUTH] = math.nan
        curves[name] = (recall.copy(), values)
    return curves


def prediction_from_coco_results(results: Sequence[dict], image_id: int, category_id_to_label: dict) -> dict:
    """COCO results entries of one image -> dict(boxes=[P, 4] xyxy, labels=[P] int64, scores=[P]).

    Args:
        results: the loaded results json (a list of dicts with image_id, category_id,
            bbox = [x, y, w, h] pixels, score).
        category_id_to_label: e.g. ``CocoDetection.category_id_to_label``.
    """
    rows = [r for r in results if r["image_id"] == image_id]
    xywh = torch.tensor([r["bbox"] for r in rows], dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),  # xywh -> xyxy
        "labels": torch.tensor([category_id_to_label[r["category_id"]] for r in rows], dtype=torch.int64),
        "scores": torch.tensor([float(r["score"]) for r in rows], dtype=torch.float32),
    }
